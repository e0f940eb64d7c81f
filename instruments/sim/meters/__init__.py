"""Power-meter simulators at their real interfaces: PPK2 serial on a pty, Otii JSON on TCP, Joulescope Driver API."""

from instruments.sim.meters.common import MeterFrontEnd, MeterProbe
from instruments.sim.meters.joulescope import JoulescopeSimulator
from instruments.sim.meters.otii import OtiiSimulator
from instruments.sim.meters.ppk2 import PPK2Calibration, PPK2Simulator

__all__ = ["JoulescopeSimulator", "MeterFrontEnd", "MeterProbe", "OtiiSimulator", "PPK2Calibration",
           "PPK2Simulator"]
