"""The simulated scope's front end: channel/timebase/trigger state, live edge search, record and ADC.

Trigger position: the record is centred on the trigger, moved later by the horizontal position/delay
(`:TIM:MAIN:OFFS` on Rigol, `:TIMebase:POSition` on Keysight). The trigger is searched on the noise-free
source from the arm time on, in chunks evaluated when the client polls; samples before the arm time are
taken from the source as well (the simulator does not wait for the pre-trigger part to fill).

Time: a plain source is sampled in the host's `time.monotonic()` seconds. A clocked source (one with
`now()`, such as the virtual board's timeline) brings its own simulation clock: the scope arms at the
source's time, searches its trigger up to it, and its record is complete once the source's time has passed
the record's end; while waiting for that, it lets an idle source's time run (`run_until`), as a real
scope's record fills while the board sits idle. Arming lets an idle source's time run for the pre-trigger
part of the record, so that part shows the board after the arm, as on a bench where the host takes longer
between captures than the pre-trigger lasts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from instruments.sim.signals import SignalSource, is_clocked

#: Largest number of samples evaluated per trigger-search step (bounds memory per poll).
SEARCH_CHUNK = 1 << 20
MAX_POINTS = 24_000_000


@dataclass
class SimChannel:
    """Vertical settings; `offset` is the voltage at the centre of the ADC range."""

    scale: float = 1.0
    offset: float = 0.0
    coupling: str = "DC"
    probe: float = 1.0
    bwl: bool = False
    display: bool = True


@dataclass
class AdcModel:
    """An ADC of `bits` with `codes_per_div` codes per division and code `ref` at the centre voltage."""

    bits: int
    codes_per_div: float
    ref: float

    def lsb(self, scale: float) -> float:
        return scale / self.codes_per_div

    def quantize(self, volts: np.ndarray, ch: SimChannel) -> np.ndarray:
        """Codes 0 .. 2**bits-1: round((V - centre) / lsb + ref), clipped at the rails."""
        codes = np.rint((volts - ch.offset) / self.lsb(ch.scale) + self.ref)
        return np.clip(codes, 0, 2**self.bits - 1).astype(np.int32)


@dataclass
class Record:
    """A completed single-shot record: ADC codes per displayed channel and the settings used."""

    codes: dict[int, np.ndarray]
    channels: dict[int, SimChannel]
    dt: float
    xorigin: float  # time of the first sample relative to the trigger
    t_trigger: float  # absolute (monotonic) trigger time
    points: int = field(default=0)


class Acquisition:
    """Per-simulator acquisition state; every public method is called with `lock` held by the server."""

    def __init__(self, source: SignalSource | None, adc: AdcModel, *, noise_vrms: float, divisions: int,
                 seed: int | None = None, n_channels: int = 4) -> None:
        self.source = source
        self.adc = adc
        self.noise_vrms = float(noise_vrms)
        self.divisions = divisions
        self.rng = np.random.default_rng(seed)
        self.lock = threading.RLock()
        self.channels = {c: SimChannel(display=c <= 2) for c in range(1, n_channels + 1)}
        self.scale = 1e-3  # s/div
        self.position = 0.0  # s, delay of the record centre after the trigger
        self.points = 12_000
        self.trig_source, self.trig_level, self.trig_slope = 1, 0.0, "rising"
        self.state = "STOP"  # STOP | RUN | WAIT | TD
        self.never_trigger = False
        self.record: Record | None = None
        self._k_next = 0
        self._last: float | None = None
        self._t_arm = 0.0
        self._window: tuple[float, float] | None = None
        self._t_trig = 0.0
        self._snapshot: tuple[float, int, float, dict[int, SimChannel]] | None = None

    def now(self) -> float:
        """The acquisition's time: the clocked source's simulation time, else the host's monotonic clock."""
        return float(self.source.now()) if is_clocked(self.source) else time.monotonic()

    @property
    def clocked(self) -> bool:
        return is_clocked(self.source)

    @property
    def dt(self) -> float:
        return self.divisions * self.scale / self.points

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.dt

    def set_points(self, points: int) -> None:
        self.points = int(min(max(points, 100), MAX_POINTS))

    def reset(self) -> None:
        """`*RST`: default settings, no record (the lock and the noise generator are kept)."""
        lock, rng = self.lock, self.rng
        self.__init__(self.source, self.adc, noise_vrms=self.noise_vrms, divisions=self.divisions,
                      n_channels=len(self.channels))
        self.lock, self.rng = lock, rng

    # ---- run control ----------------------------------------------------------------------------
    def arm(self, now: float | None = None, *, range_divisor: dict[int, float] | None = None) -> None:
        """Start a single acquisition: search for the trigger from `now` on.

        `range_divisor` (channel -> factor, a fault) acquires a channel at that fraction of its set vertical
        range; the record's preamble says so, as a scope that applied another volts/div would.
        """
        now = self.now() if now is None else now
        if self.clocked:  # fill the pre-trigger part first: with an idle board, as after a bench host's delays
            pre = self.points / 2 * self.dt - self.position
            if pre > 0:
                now = float(self.source.run_until(now + pre))
        self.state = "WAIT"
        self._t_arm = now
        self._k_next = 0
        self._last = None
        self._window = None
        shrink = range_divisor or {}
        self._snapshot = (self.dt, self.points, self.position,
                          {c: replace(ch, scale=ch.scale / shrink.get(c, 1.0)) for c, ch in self.channels.items()})
        if self.source is not None and hasattr(self.source, "arm"):
            self.source.arm(now)

    def stop(self) -> None:
        self.state = "STOP"
        self._window = None

    def run(self) -> None:
        self.state = "RUN"

    def busy(self) -> bool:
        return self.state in ("WAIT", "TD")

    def window_end(self) -> float | None:
        return self._window[1] if self._window else None

    def advance(self, now: float | None = None) -> str:
        """Move the acquisition to `now`: search the trigger, complete the record; return the state."""
        now = self.now() if now is None else now
        if self.state == "WAIT" and not self.never_trigger:
            self._search(now)
        if self.state == "TD" and self._window is not None and now < self._window[1] and self.clocked:
            now = float(self.source.run_until(self._window[1]))  # the record fills while the board idles
        if self.state == "TD" and self._window is not None and now >= self._window[1]:
            self._complete()
        return self.state

    def _search(self, now: float) -> None:
        dt = self._snapshot[0]
        k_end = int((now - self._t_arm) / dt)  # last sample index that has happened
        while self._k_next <= k_end and self.state == "WAIT":
            k_stop = min(k_end + 1, self._k_next + SEARCH_CHUNK)
            t = self._t_arm + dt * np.arange(self._k_next, k_stop, dtype=np.float64)
            v = self._source_volts(self.trig_source, t)
            t_hit = self._find_edge(t, v)
            self._last = float(v[-1])
            self._k_next = k_stop
            if t_hit is not None:
                self._trigger(t_hit)

    def _find_edge(self, t: np.ndarray, v: np.ndarray) -> float | None:
        level = self.trig_level
        prev = np.concatenate(([self._last], v[:-1])) if self._last is not None else v[:-1]
        cur = v if self._last is not None else v[1:]
        tc = t if self._last is not None else t[1:]
        if cur.size == 0:
            return None
        if self.trig_slope == "rising":
            hits = (prev < level) & (cur >= level)
        else:
            hits = (prev > level) & (cur <= level)
        idx = np.flatnonzero(hits)
        if idx.size == 0:
            return None
        i = int(idx[0])
        dt = self._snapshot[0]
        frac = (level - prev[i]) / (cur[i] - prev[i]) if cur[i] != prev[i] else 1.0
        return float(tc[i] - dt + frac * dt)

    def _trigger(self, t_trig: float) -> None:
        dt, points, position, _ = self._snapshot
        start = t_trig + position - points / 2 * dt
        self._t_trig = t_trig
        self._window = (start, start + points * dt)
        self.state = "TD"

    def _complete(self) -> None:
        dt, points, position, chans = self._snapshot
        start = self._window[0]
        t = start + dt * np.arange(points, dtype=np.float64)
        codes: dict[int, np.ndarray] = {}
        for c, ch in chans.items():
            if not ch.display:
                continue
            v = self._source_volts(c, t)
            if self.noise_vrms > 0:
                v = v + self.rng.normal(0.0, self.noise_vrms, size=v.size)
            if ch.coupling == "AC":
                v = v - v.mean()
            elif ch.coupling == "GND":
                v = np.zeros_like(v)
            codes[c] = self.adc.quantize(v, ch)
        self.record = Record(codes, chans, dt, start - self._t_trig, self._t_trig, points)
        self.state = "STOP"
        self._window = None

    def _source_volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        if self.source is None:
            return np.zeros_like(t)
        return np.asarray(self.source.volts(channel, t), dtype=np.float64)
