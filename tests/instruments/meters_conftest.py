"""Shared pieces of the power-meter tests: a board with known pulses, as amperes and marker volts."""

from __future__ import annotations

import numpy as np

from instruments.sim import FunctionSource

SUPPLY = 5.0
IDLE_A, ACTIVE_A = 0.048, 0.152
# Period and width are not multiples of any meter's sample interval, so the edges fall anywhere in a sample.
PERIOD, WIDTH = 10.37e-3, 4.13e-3
MARKER_V = 3.3


def active(t: np.ndarray) -> np.ndarray:
    return np.mod(t, PERIOD) < WIDTH


def board(idle_a: float = IDLE_A, active_a: float = ACTIVE_A) -> FunctionSource:
    """Current in A on channel 1, GPIO marker in volts on channel 2 (absolute time: already running)."""
    return FunctionSource({1: lambda t: np.where(active(t), active_a, idle_a),
                           2: lambda t: np.where(active(t), MARKER_V, 0.0)})


def constant(amps: float, marker_v: float = 0.0) -> FunctionSource:
    return FunctionSource({1: lambda t: np.full_like(t, amps), 2: lambda t: np.full_like(t, marker_v)})


def true_energy_mj(active_a: float = ACTIVE_A, burden_ohms: float = 0.0) -> float:
    """Energy of one inference at SUPPLY (the ground truth the analysis must find)."""
    return (SUPPLY - active_a * burden_ohms) * active_a * WIDTH * 1e3


def true_idle_mw(idle_a: float = IDLE_A) -> float:
    return SUPPLY * idle_a * 1e3
