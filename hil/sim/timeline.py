"""The virtual board's activity as probe voltages: a `SignalSource` for the simulated oscilloscope.

The board records every active interval (an Invoke(), with its supply current) and every marker pulse;
the scope simulator asks for noise-free volts at absolute `time.monotonic()` times.
"""

from __future__ import annotations

import threading
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


class ActivityTimeline:
    """Supply current and marker level of one board over time; `volts(channel, t)` is the SignalSource API."""

    def __init__(
        self, wiring: ProbeWiring | None = None, idle_current_a: float = 0.045, keep_s: float = 300.0
    ):
        self.wiring = wiring or ProbeWiring()
        self.idle_current_a = idle_current_a
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._active = _Intervals()
        self._marker = _Intervals()

    def active(self, start: float, end: float, current_a: float, *, marker: bool) -> None:
        """Record an Invoke() from `start` to `end` drawing `current_a`, with the marker high if asked."""
        with self._lock:
            self._active.add(start, end, current_a)
            if marker:
                self._marker.add(start, end, 1.0)
            self._active.prune(start - self.keep_s)
            self._marker.prune(start - self.keep_s)

    def cut(self, at: float) -> None:
        """The board reset at `at`: activity and marker stop there."""
        with self._lock:
            self._active.cut(at)
            self._marker.cut(at)

    def current(self, t: np.ndarray) -> np.ndarray:
        """Supply current (A) at absolute monotonic times `t`."""
        with self._lock:
            return self._active.sample(np.asarray(t, dtype=float), self.idle_current_a)

    def marker(self, t: np.ndarray) -> np.ndarray:
        """Marker level (0 or 1) at absolute monotonic times `t`."""
        with self._lock:
            return self._marker.sample(np.asarray(t, dtype=float), 0.0)

    def volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        """Noise-free probe volts on scope `channel` at absolute `time.monotonic()` times (0 V if unwired)."""
        w = self.wiring
        t = np.asarray(t, dtype=float)
        if channel == w.shunt_channel:
            return self.current(t) * w.shunt_ohms * w.gain
        if channel == w.marker_channel:
            return self.marker(t) * w.marker_volts
        return np.zeros(t.shape)
