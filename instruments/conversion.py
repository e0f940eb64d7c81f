"""Vendor preamble formulas: ADC codes to volts and sample index to time, one function per vendor.

A preamble dict carries `formula` so a stored capture can be converted again later (`volts_from_preamble`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from instruments.errors import InstrumentError


def _check_increment(name: str, value: float) -> None:
    """Reject zero, negative or non-finite increments: they would silently flip or flatten a trace."""
    if not np.isfinite(value) or value <= 0:
        raise InstrumentError(f"preamble {name} must be positive, got {value!r}; re-read the preamble")


def rigol_volts(codes: np.ndarray, yincrement: float, yorigin: float, yreference: float) -> np.ndarray:
    """Rigol: V = (code - yorigin - yreference) * yincrement."""
    _check_increment("yincrement", yincrement)
    return (np.asarray(codes, dtype=np.float64) - (yorigin + yreference)) * yincrement


def keysight_volts(codes: np.ndarray, yincrement: float, yorigin: float, yreference: float) -> np.ndarray:
    """Keysight/Agilent: V = (code - yreference) * yincrement + yorigin."""
    _check_increment("yincrement", yincrement)
    return (np.asarray(codes, dtype=np.float64) - yreference) * yincrement + yorigin


def tektronix_volts(codes: np.ndarray, ymult: float, yoff: float, yzero: float) -> np.ndarray:
    """Tektronix: V = (code - YOFf) * YMUlt + YZEro."""
    _check_increment("YMUlt", ymult)
    return (np.asarray(codes, dtype=np.float64) - yoff) * ymult + yzero


def sample_time(index: np.ndarray | int, xincrement: float, xorigin: float, xreference: float = 0.0):
    """Time of sample `index` (0-based): (index - xreference) * xincrement + xorigin (all vendors)."""
    _check_increment("xincrement", xincrement)
    return (np.asarray(index, dtype=np.float64) - xreference) * xincrement + xorigin


def volts_from_preamble(codes: np.ndarray, preamble: dict[str, Any]) -> np.ndarray:
    """Convert stored raw codes with the formula named in `preamble["formula"]`."""
    formula = preamble.get("formula")
    if formula == "rigol":
        return rigol_volts(codes, preamble["yincrement"], preamble["yorigin"], preamble["yreference"])
    if formula == "keysight":
        return keysight_volts(codes, preamble["yincrement"], preamble["yorigin"], preamble["yreference"])
    if formula == "tektronix":
        return tektronix_volts(codes, preamble["ymult"], preamble["yoff"], preamble["yzero"])
    raise InstrumentError(f"unknown preamble formula {formula!r}; expected rigol, keysight or tektronix")
