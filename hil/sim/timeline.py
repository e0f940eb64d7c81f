"""The virtual board's activity in simulation time: its clock, and a `SignalSource` for the simulated scope.

One simulation clock (seconds since power-on) drives the board, its activity and the scope: the board
advances it by the modelled duration of everything it does and records every active interval (an
Invoke(), with its supply current) and every marker pulse; the scope simulator asks for noise-free volts at
simulation times and, through `now()` and `run_until()`, reads and advances the same clock. Bench noise
(`hil.sim.noise`) enters as a gain on the supply current from a simulation time on (`set_gain`), so a capture
fetched later still sees the gain that applied when it was taken. Nothing here reads the host's wall clock
except `pace`, which only delays replies (`time_scale`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

MARKER_HIGH_VOLTS = 3.3  # ESP32 GPIO output high


@dataclass(frozen=True)
class ProbeWiring:
    """How the probes see the board: which channel carries the shunt and the marker, and the shunt's scale."""

    shunt_channel: int = 1
    marker_channel: int = 2
    shunt_ohms: float = 0.05
    gain: float = 1.0  # current-sense amplifier gain; 1.0 for a bare shunt
    marker_volts: float = MARKER_HIGH_VOLTS


class _Intervals:
    """Non-overlapping [start, end) intervals with a value, appended in time order."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.values: list[float] = []

    def add(self, start: float, end: float, value: float) -> None:
        if self.starts and start < self.ends[-1]:
            start = self.ends[-1]
        if end > start:
            self.starts.append(start)
            self.ends.append(end)
            self.values.append(value)

    def cut(self, at: float) -> None:
        """End every interval at `at` (a reset stops the CPU)."""
        while self.starts and self.starts[-1] >= at:
            self.starts.pop()
            self.ends.pop()
            self.values.pop()
        if self.ends and self.ends[-1] > at:
            self.ends[-1] = at

    def prune(self, before: float) -> None:
        k = int(np.searchsorted(np.asarray(self.ends), before, side="right"))
        if k:
            del self.starts[:k], self.ends[:k], self.values[:k]

    def sample(self, t: np.ndarray, default: float) -> np.ndarray:
        out = np.full(t.shape, default, dtype=float)
        if not self.starts:
            return out
        starts, ends, values = np.asarray(self.starts), np.asarray(self.ends), np.asarray(self.values)
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = idx >= 0
        inside = np.zeros(t.shape, dtype=bool)
        inside[ok] = t[ok] < ends[idx[ok]]
        out[inside] = values[idx[inside]]
        return out


class _Steps:
    """A piecewise-constant value over time: `value` from each start on, `default` before the first."""

    def __init__(self, default: float = 1.0) -> None:
        self.default = default
        self.starts: list[float] = []
        self.values: list[float] = []

    def set(self, at: float, value: float) -> None:
        if self.starts and at <= self.starts[-1]:  # time never runs back: the same instant is overwritten
            at = self.starts[-1]
            self.starts.pop()
            self.values.pop()
        self.starts.append(at)
        self.values.append(value)

    def prune(self, before: float) -> None:
        """Forget steps superseded before `before` (the one in force then is kept)."""
        k = int(np.searchsorted(np.asarray(self.starts), before, side="right")) - 1
        if k > 0:
            del self.starts[:k], self.values[:k]

    def sample(self, t: np.ndarray) -> np.ndarray | None:
        """The value at times `t`, or None when no step was ever set (the default everywhere)."""
        if not self.starts:
            return None
        idx = np.searchsorted(np.asarray(self.starts), t, side="right") - 1
        values = np.asarray(self.values)
        return np.where(idx >= 0, values[np.maximum(idx, 0)], self.default)


class ActivityTimeline:
    """Supply current and marker level of one board over simulation time, and the simulation clock.

    `volts(channel, t)` is the SignalSource API; `now()`/`run_until(t)` make it a clocked source: the scope
    simulator acquires in this clock, not in the host's. `time_scale` paces wall time to simulation time
    (1.0: as long as the chip takes; 0: as fast as the host can); it changes no figure. `ripple_rel` and
    `ripple_hz` add the supply ripple to the current, with phase `ripple_phase` (drawn from the bench's seed).
    """

    def __init__(
        self, wiring: ProbeWiring | None = None, idle_current_a: float = 0.045, keep_s: float = 300.0, *,
        time_scale: float = 0.0, ripple_rel: float = 0.0, ripple_hz: float = 100.0, ripple_phase: float = 0.0,
    ):  # fmt: skip
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.wiring = wiring or ProbeWiring()
        self.idle_current_a = idle_current_a
        self.keep_s = keep_s
        self.time_scale = time_scale
        self.ripple_rel = ripple_rel
        self.ripple_hz = ripple_hz
        self.ripple_phase = ripple_phase
        self._lock = threading.RLock()
        self._active = _Intervals()
        self._marker = _Intervals()
        # an MLPerf Tiny DUT's timestamp line idles high (open drain, pulled up) and pulses low at each timestamp
        self.marker_idle_high = False
        self._pulses = _Intervals()
        self._gain = _Steps(1.0)  # bench noise: supply-current gain from a simulation time on
        self._now = 0.0
        self._busy = 0
        self._wall_mark: tuple[float, float] | None = None  # (wall, simulation) at the start of a busy spell
        self._sync_hooks: list[Callable[[], None]] = []

    def add_sync_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` before each command the board executes (the scope handles what it was sent first)."""
        self._sync_hooks.append(hook)

    def sync(self) -> None:
        """Before a command: let every instrument on this clock catch up with what the host sent it."""
        for hook in list(self._sync_hooks):
            hook()

    # -- the simulation clock ---------------------------------------------------------------------------
    def now(self) -> float:
        """Simulation time (s since power-on): what the board has done up to, and the scope may see."""
        with self._lock:
            return self._now

    @contextmanager
    def busy(self) -> Iterator[None]:
        """The board is executing a command: the scope may not let idle time pass meanwhile."""
        with self._lock:
            self._busy += 1
            if self._busy == 1:
                self._wall_mark = (time.monotonic(), self._now)
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def advance(self, seconds: float) -> float:
        """The board spent `seconds` (simulation); return the new time. Replies are paced by `pace()`."""
        with self._lock:
            self._now += max(seconds, 0.0)
            return self._now

    def pace(self) -> None:
        """Sleep until wall time has caught up with `time_scale` x the simulation time spent in this busy spell."""
        if self.time_scale <= 0:
            return
        with self._lock:
            mark = self._wall_mark
            now = self._now
        if mark is None:
            return
        deadline = mark[0] + (now - mark[1]) * self.time_scale
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(remaining)

    def run_until(self, t: float) -> float:
        """Let the idle board's time run to `t` (the scope waits for its record); return the time reached.

        While the board executes a command its time is its own: the clock does not move from here.
        """
        with self._lock:
            if self._busy or t <= self._now:
                return self._now
            step = t - self._now
            self._now = t
        if self.time_scale > 0:
            time.sleep(step * self.time_scale)
        return t

    # -- activity ---------------------------------------------------------------------------------------
    def active(self, start: float, end: float, current_a: float, *, marker: bool) -> None:
        """Record an Invoke() from `start` to `end` (simulation s) drawing `current_a`, marker high if asked."""
        with self._lock:
            self._active.add(start, end, current_a)
            if marker:
                self._marker.add(start, end, 1.0)
            self._active.prune(start - self.keep_s)
            self._marker.prune(start - self.keep_s)

    def pulse_low(self, start: float, seconds: float) -> None:
        """A timestamp on an idle-high marker line (`marker_idle_high`): low from `start` for `seconds`."""
        with self._lock:
            self._pulses.add(start, start + seconds, 1.0)
            self._pulses.prune(start - self.keep_s)

    def set_gain(self, gain: float, at: float | None = None) -> None:
        """From simulation time `at` (default: now) on, the measured supply current is `gain` x the modelled one
        (bench noise: the measurement chain and the supply drift; idle and active current alike)."""
        with self._lock:
            at = self._now if at is None else at
            self._gain.set(at, gain)
            self._gain.prune(at - self.keep_s)

    def cut(self, at: float | None = None) -> None:
        """The board reset at `at` (default: now): activity and marker stop there."""
        with self._lock:
            at = self._now if at is None else at
            self._active.cut(at)
            self._marker.cut(at)

    def current(self, t: np.ndarray) -> np.ndarray:
        """Supply current (A) at simulation times `t`, supply ripple and bench-noise gain included."""
        t = np.asarray(t, dtype=float)
        with self._lock:
            i = self._active.sample(t, self.idle_current_a)
            gain = self._gain.sample(t)
        if gain is not None:
            i = i * gain
        if self.ripple_rel:
            i = i * (1.0 + self.ripple_rel * np.sin(2 * math.pi * self.ripple_hz * t + self.ripple_phase))
        return i

    def marker(self, t: np.ndarray) -> np.ndarray:
        """Marker level (0 or 1) at simulation times `t`."""
        with self._lock:
            if self.marker_idle_high:
                return 1.0 - self._pulses.sample(np.asarray(t, dtype=float), 0.0)
            return self._marker.sample(np.asarray(t, dtype=float), 0.0)

    def volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        """Noise-free probe volts on scope `channel` at simulation times `t` (0 V if unwired)."""
        w = self.wiring
        t = np.asarray(t, dtype=float)
        if channel == w.shunt_channel:
            return self.current(t) * w.shunt_ohms * w.gain
        if channel == w.marker_channel:
            return self.marker(t) * w.marker_volts
        return np.zeros(t.shape)
