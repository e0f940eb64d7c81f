"""A periodic virtual board for simulator tests: shunt voltage on CH1, inference marker on CH2."""

from __future__ import annotations

import numpy as np

from instruments.sim import FunctionSource

R, SUPPLY = 0.05, 5.0
PERIOD, WIDTH = 10e-3, 4e-3
IDLE_A, ACTIVE_A = 0.05, 0.15
MARKER_V = 3.3


def shunt_volts(t: np.ndarray) -> np.ndarray:
    """Low-side shunt voltage of a board drawing IDLE_A, and ACTIVE_A during each inference."""
    return np.where(np.mod(t, PERIOD) < WIDTH, ACTIVE_A, IDLE_A) * R


def marker_volts(t: np.ndarray) -> np.ndarray:
    return np.where(np.mod(t, PERIOD) < WIDTH, MARKER_V, 0.0)


def board_source() -> FunctionSource:
    """Already running when the scope is armed (absolute monotonic time)."""
    return FunctionSource({1: shunt_volts, 2: marker_volts})


def true_energy_mj() -> float:
    return ACTIVE_A * (SUPPLY - ACTIVE_A * R) * WIDTH * 1e3


def true_idle_mw() -> float:
    return IDLE_A * (SUPPLY - IDLE_A * R) * 1e3
