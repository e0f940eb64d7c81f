"""`ScopeCurrentSource`: an oscilloscope and a shunt behind the same interface as the meters.

The scope keeps its own configuration (channels, timebase, trigger on the marker); this adapter arms it,
waits for the trigger, fetches the shunt and marker channels and converts the shunt volts to amperes for
the wiring (`low_side`/`high_side` with a differential probe: I = V / R; `amplifier`: I = V / (G R)).
The current waveform keeps the scope's provenance and its resolution (one ADC step / (G R)); pass
`burden_ohms=shunt_ohms` to `hil.power.analyze(current=...)` to keep the shunt's burden correction.
"""

from __future__ import annotations

from typing import Any

from instruments.errors import InstrumentError
from instruments.meters.base import current_waveform, logic_waveform
from instruments.waveform import Waveform

WIRINGS = ("low_side", "high_side", "amplifier")


class ScopeCurrentSource:
    """`arm()` / `capture()` over an `instruments.oscilloscope.Oscilloscope` and a shunt of `shunt_ohms`."""

    def __init__(self, scope: Any, *, shunt_ohms: float, shunt_channel: int = 1, marker_channel: int | None = 2,
                 wiring: str = "low_side", amplifier_gain: float = 1.0, marker_threshold_v: float = 1.65) -> None:
        if wiring not in WIRINGS:
            raise InstrumentError(f"wiring must be one of {', '.join(WIRINGS)}, got {wiring!r}")
        if not shunt_ohms > 0:
            raise InstrumentError(f"shunt_ohms must be positive, got {shunt_ohms!r}")
        self.scope = scope
        self.shunt_ohms = float(shunt_ohms)
        self.gain = float(amplifier_gain) if wiring == "amplifier" else 1.0
        self.shunt_channel, self.marker_channel = shunt_channel, marker_channel
        self.wiring, self.marker_threshold_v = wiring, float(marker_threshold_v)
        self.idn = scope.idn

    def arm(self) -> None:
        self.scope.arm()

    def capture(self, duration_s: float | None = None, *, marker: bool = True,
                timeout_s: float | None = None) -> tuple[Waveform, Waveform | None]:
        """Wait for the armed scope's trigger (arming now if needed) and return (current A, marker 0/1).

        `duration_s` is the scope's record length, set by its timebase; it is not used here.
        """
        if getattr(self.scope, "_arm_time", None) is None:
            self.scope.arm()
        self.scope.wait_for_trigger(timeout_s=timeout_s if timeout_s is not None else 10.0)
        self.scope._arm_time = None
        channels = [self.shunt_channel] + ([self.marker_channel] if marker and self.marker_channel else [])
        fetched = self.scope.fetch(*channels)
        shunt = fetched[0]
        scale = 1.0 / (self.gain * self.shunt_ohms)
        prov = {**self.provenance(), "scope": shunt.provenance()}
        current = current_waveform(shunt.volts * scale, shunt.dt, channel=f"CH{shunt.channel}",
                                   resolution_a=shunt.step_v * scale,
                                   full_scale_a=shunt.volts_per_div * 10 * scale, idn=self.idn, settings=prov,
                                   clipped=shunt.clipped, t0=shunt.t0, adc_bits=shunt.adc_bits)
        mk = None
        if len(fetched) > 1:
            m = fetched[1]
            mk = logic_waveform((m.volts > self.marker_threshold_v).astype(float), m.dt, channel=f"CH{m.channel}",
                                idn=self.idn, settings={**prov, "scope": m.provenance()}, t0=m.t0)
        return current, mk

    def provenance(self) -> dict[str, Any]:
        return {"kind": "scope", "resource": self.scope.resource, "idn": self.idn, "model": self.scope.model,
                "wiring": self.wiring, "shunt_ohms": self.shunt_ohms, "amplifier_gain": self.gain,
                "shunt_channel": self.shunt_channel, "marker_channel": self.marker_channel}

    def close(self) -> None:
        self.scope.close()

    def __enter__(self) -> ScopeCurrentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
