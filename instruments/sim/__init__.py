"""SCPI oscilloscope simulator on loopback TCP (Rigol and Keysight dialects) and its signal sources."""

from instruments.sim.server import DEFAULT_IDN, Faults, ScopeSimulator
from instruments.sim.signals import ArraySource, ClockedSource, FunctionSource, SignalSource, is_clocked

__all__ = ["DEFAULT_IDN", "ArraySource", "ClockedSource", "Faults", "FunctionSource", "ScopeSimulator", "SignalSource",
           "is_clocked"]
