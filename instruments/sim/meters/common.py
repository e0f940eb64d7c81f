"""What a simulated meter sees of a `SignalSource`: current in amperes and the marker as a logic level.

Any source with `volts(channel, t)` works (`FunctionSource`, `ArraySource`, the virtual board's
`ActivityTimeline`). `MeterProbe` says which source channel is the supply current (and its scale: a source
built for meters returns amperes, 1 A/V; the scope-oriented `ActivityTimeline` returns shunt volts, so pass
`amps_per_volt = 1 / (shunt_ohms * gain)`) and which channel drives the meter's digital input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from instruments.sim.signals import SignalSource, is_clocked

#: Idle time a meter lets pass on a clocked source when armed, so a run never starts on its first sample.
CLOCKED_LEAD_S = 0.005


@dataclass(frozen=True)
class MeterProbe:
    """How the meter is wired to the source: current channel and scale, marker channel and input threshold."""

    current_channel: int = 1
    amps_per_volt: float = 1.0
    marker_channel: int | None = 2
    logic_threshold_v: float = 1.2  # marker volts above this read as 1 (meters: ~0.4-0.7 x their IO voltage)

    @classmethod
    def for_shunt_source(cls, shunt_ohms: float, gain: float = 1.0, **kw) -> MeterProbe:
        """For a source that gives shunt volts on the current channel (e.g. `ActivityTimeline`)."""
        return cls(amps_per_volt=1.0 / (shunt_ohms * gain), **kw)


class MeterFrontEnd:
    """Samples a source at meter sample times: averaged current (like a meter's anti-alias average) and logic."""

    def __init__(self, source: SignalSource | None, probe: MeterProbe | None = None, *, oversample: int = 4,
                 noise_a: float = 0.0, seed: int | None = None) -> None:
        self.source = source
        self.probe = probe or MeterProbe()
        self.oversample = max(1, int(oversample))
        self.noise_a = float(noise_a)
        self.rng = np.random.default_rng(seed)
        self._wall_last: float | None = None

    @property
    def clocked(self) -> bool:
        """True on a clocked source (the virtual board's simulation time)."""
        return is_clocked(self.source)

    def now(self) -> float:
        """The meter's time: `time.monotonic()`, or a clocked source's simulation time (the virtual board's).

        On a clocked source idle time passes as wall time passes (as it does on a bench), so a meter waiting
        for samples after the run gets them; while the board executes, its own clock moves time.
        """
        wall = time.monotonic()
        if not is_clocked(self.source):
            return wall
        if self._wall_last is not None and wall > self._wall_last:
            self.source.run_until(self.source.now() + (wall - self._wall_last))
        self._wall_last = wall
        return float(self.source.now())

    def arm(self, t: float | None = None) -> float:
        """Start an acquisition now (or at `t`); return its start time on the meter's clock."""
        if is_clocked(self.source):
            self._wall_last = time.monotonic()
            self.source.run_until(self.source.now() + CLOCKED_LEAD_S)
            t = float(self.source.now())
        elif t is None:
            t = time.monotonic()
        if self.source is not None and hasattr(self.source, "arm"):
            self.source.arm(t)
        return t

    def current(self, t: np.ndarray, dt: float) -> np.ndarray:
        """Mean current over [t - dt/2, t + dt/2) of each sample (A), plus white noise if configured."""
        t = np.asarray(t, dtype=np.float64)
        if self.source is None:
            out = np.zeros_like(t)
        else:
            k = self.oversample
            offs = (np.arange(k, dtype=np.float64) + 0.5) / k - 0.5
            sub = (t[:, None] + offs[None, :] * dt).ravel()
            v = np.asarray(self.source.volts(self.probe.current_channel, sub), dtype=np.float64)
            out = v.reshape(t.size, k).mean(axis=1) * self.probe.amps_per_volt
        if self.noise_a > 0:
            out = out + self.rng.normal(0.0, self.noise_a, size=out.size)
        return out

    def logic(self, t: np.ndarray) -> np.ndarray:
        """Digital input level (0/1, uint8) at times t."""
        t = np.asarray(t, dtype=np.float64)
        ch = self.probe.marker_channel
        if self.source is None or ch is None:
            return np.zeros(t.shape, dtype=np.uint8)
        v = np.asarray(self.source.volts(ch, t), dtype=np.float64)
        return (v > self.probe.logic_threshold_v).astype(np.uint8)
