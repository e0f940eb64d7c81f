"""The current-source interface shared by power meters and the scope path, and the meter registry.

A *current source* is anything that can be armed and then return one window of supply current as a
`Waveform` of amperes, optionally with the inference marker as a logic `Waveform` (0/1) sampled on the
same clock. Meter drivers subclass `CurrentMeter` with `kind="name"`, which registers them in `METERS`;
`instruments.meters.open_meter(kind, resource, **settings)` opens one.

Conventions: a current waveform stores amperes in `Waveform.volts` and says so in
`settings["unit"] == "A"`; a marker waveform stores 0/1 and has `settings["unit"] == "logic"`.
Times are seconds with 0 at the first sample after `arm()` (a scope adapter keeps the scope's trigger time).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from instruments.errors import InstrumentError
from instruments.waveform import Waveform

CURRENT_UNIT = "A"
LOGIC_UNIT = "logic"

#: Meter kind (as accepted by `open_meter(kind)`) -> class; filled by `CurrentMeter.__init_subclass__`.
METERS: dict[str, type[CurrentMeter]] = {}


class MeterStreamError(InstrumentError):
    """The meter's measurement stream was malformed, truncated or lost samples: no figure is returned."""


@runtime_checkable
class CurrentSource(Protocol):
    """What the power measurement needs from a meter or a scope with a shunt."""

    idn: str

    def arm(self) -> None:
        """Start acquiring (returns at once)."""
        ...

    def capture(self, duration_s: float | None = None, *, marker: bool = True,
                timeout_s: float | None = None) -> tuple[Waveform, Waveform | None]:
        """Finish the armed acquisition: (current in A, marker as 0/1 or None)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-ready identity and settings (model, serial number, ranges, sample rate, calibration)."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class MeterLimits:
    """Documented limits of one meter model (what its figures can and cannot resolve)."""

    model: str
    sample_rates: tuple[float, ...]  # selectable output sample rates, S/s
    max_current_a: float
    ranges: tuple[str, ...]  # human-readable current ranges and their resolution
    range_switching: str  # what happens at an automatic range change
    digital_inputs: str  # how many, which levels
    marker_input_default: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_current(wf: Waveform) -> bool:
    """True for a waveform of amperes (from a meter or `ScopeCurrentSource`)."""
    return isinstance(wf.settings, dict) and wf.settings.get("unit") == CURRENT_UNIT


def is_logic(wf: Waveform) -> bool:
    """True for a 0/1 marker waveform from a meter's digital input."""
    return isinstance(wf.settings, dict) and wf.settings.get("unit") == LOGIC_UNIT


def current_waveform(amps: np.ndarray, dt: float, *, channel: str | int, resolution_a: float,
                     full_scale_a: float, idn: str, settings: dict[str, Any], clipped: bool = False,
                     t0: float = 0.0, adc_bits: int = 16) -> Waveform:
    """A `Waveform` of amperes: `adc_step_v` is one current step (A), volts/div a tenth of full scale."""
    amps = np.asarray(amps, dtype=np.float64)
    if amps.size and not np.all(np.isfinite(amps)):
        bad = int(np.flatnonzero(~np.isfinite(amps))[0])
        raise MeterStreamError(f"{idn}: non-finite current at sample {bad}; the stream is corrupt")
    return Waveform(t0=float(t0), dt=float(dt), volts=amps, channel=channel,
                    volts_per_div=float(full_scale_a) / 10.0, offset=0.0, probe=1.0, adc_bits=adc_bits,
                    clipped=bool(clipped), raw_codes=None, preamble={"formula": None, "unit": CURRENT_UNIT},
                    idn=idn, settings={**settings, "quantity": "current", "unit": CURRENT_UNIT},
                    adc_step_v=float(resolution_a))


def logic_waveform(levels: np.ndarray, dt: float, *, channel: str | int, idn: str, settings: dict[str, Any],
                   t0: float = 0.0) -> Waveform:
    """A marker `Waveform` of 0/1 (fractions in between where a meter reports sub-sample edge times)."""
    return Waveform(t0=float(t0), dt=float(dt), volts=np.asarray(levels, dtype=np.float64), channel=channel,
                    volts_per_div=0.1, offset=0.5, probe=1.0, adc_bits=1, clipped=False, raw_codes=None,
                    preamble={"formula": None, "unit": LOGIC_UNIT}, idn=idn,
                    settings={**settings, "quantity": "marker", "unit": LOGIC_UNIT}, adc_step_v=1.0)


class CurrentMeter:
    """Base class of the meter drivers: arm / capture / provenance / close, and the registry.

    Subclasses implement `_start()` (begin streaming or recording), `_finish(duration_s, marker, timeout_s)`
    (stop and return the waveforms of the first `duration_s` seconds) and `_stop_quietly()`.
    """

    kind: ClassVar[str] = ""
    limits: ClassVar[MeterLimits]

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = kind or ""
        if kind is None:
            return
        taken = METERS.get(kind)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"meter kind {kind!r} is already taken by {taken.__module__}.{taken.__qualname__}")
        METERS[kind] = cls

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.idn = ""
        self.model = ""
        self.serial_number = ""
        self.sample_rate = 0.0
        self.marker_input = 0
        self._t_arm: float | None = None

    # ---- the CurrentSource interface ------------------------------------------------------------
    def arm(self) -> None:
        """Start streaming/recording now; `capture` returns the window that starts here."""
        if self._t_arm is not None:
            self._stop_quietly()
        self._start()
        self._t_arm = time.monotonic()

    def capture(self, duration_s: float | None = None, *, marker: bool = True,
                timeout_s: float | None = None) -> tuple[Waveform, Waveform | None]:
        """Return `duration_s` seconds from the arm time (arming now if needed; None = up to now)."""
        if self._t_arm is None:
            if duration_s is None:
                raise InstrumentError(f"{self.kind} meter at {self.resource}: capture() without duration "
                                      "needs a prior arm()")
            self.arm()
        if duration_s is None:
            duration_s = time.monotonic() - self._t_arm
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise InstrumentError(f"capture duration must be positive, got {duration_s!r}")
        timeout_s = float(timeout_s) if timeout_s is not None else duration_s + 5.0
        remaining = self._t_arm + duration_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        try:
            return self._finish(float(duration_s), marker, timeout_s)
        finally:
            self._t_arm = None

    def provenance(self) -> dict[str, Any]:
        return {"kind": self.kind, "resource": self.resource, "idn": self.idn, "model": self.model,
                "serial_number": self.serial_number, "sample_rate": self.sample_rate,
                "marker_input": self.marker_input, "limits": self.limits.to_dict(), **self._settings()}

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- hooks ----------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {}

    def _start(self) -> None:
        raise NotImplementedError

    def _finish(self, duration_s: float, marker: bool, timeout_s: float) -> tuple[Waveform, Waveform | None]:
        raise NotImplementedError

    def _stop_quietly(self) -> None:
        """Abandon an armed acquisition (re-arm)."""

    # ---- helpers --------------------------------------------------------------------------------
    def _n_samples(self, duration_s: float) -> int:
        n = int(round(duration_s * self.sample_rate))
        if n < 2:
            raise InstrumentError(f"{duration_s:g} s at {self.sample_rate:g} S/s is fewer than 2 samples")
        return n
