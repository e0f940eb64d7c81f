"""Power meters beside the oscilloscope: Nordic PPK2, Qoitech Otii, Joulescope, through one interface.

`open_meter(kind, resource, **settings)` returns a `CurrentMeter` (`arm()`, `capture(duration_s, marker=True)
-> (current, marker)`, `idn`, `provenance()`, `close()`); `ScopeCurrentSource` gives a scope and shunt the
same interface. The vendors' host libraries are imported only when a meter of that kind is opened.
"""

from __future__ import annotations

from typing import Any

from instruments.errors import InstrumentError
from instruments.meters import joulescope, otii, ppk2  # noqa: F401  (each module registers its driver)
from instruments.meters.base import (
    METERS,
    CurrentMeter,
    CurrentSource,
    MeterLimits,
    MeterStreamError,
    current_waveform,
    is_current,
    is_logic,
    logic_waveform,
)
from instruments.meters.joulescope import JoulescopeMeter
from instruments.meters.otii import OtiiMeter
from instruments.meters.ppk2 import PPK2Meter
from instruments.meters.scope_source import ScopeCurrentSource

__all__ = ["METERS", "CurrentMeter", "CurrentSource", "JoulescopeMeter", "MeterLimits", "MeterStreamError",
           "OtiiMeter", "PPK2Meter", "ScopeCurrentSource", "current_waveform", "is_current", "is_logic",
           "logic_waveform", "open_meter"]


def open_meter(kind: str, resource: str = "", **settings: Any) -> CurrentMeter:
    """Open a meter: `kind` is ppk2 (resource: serial port), otii (host[:port]) or joulescope (path/serial/"")."""
    cls = METERS.get(kind)
    if cls is None:
        raise InstrumentError(f"unknown meter kind {kind!r}; choose one of {', '.join(sorted(METERS))}")
    try:
        return cls(resource, **settings)
    except TypeError as exc:  # a setting this meter does not have
        raise InstrumentError(f"{kind} meter: {exc}") from None
