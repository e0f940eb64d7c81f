"""Signal sources for the simulator: what the probe tips see, as a function of absolute time.

Times are `time.monotonic()` seconds, or the source's own simulation seconds for a `ClockedSource` (one with
`now()` and `run_until(t)`, such as the virtual board's timeline). A source may also define `arm(t_arm)`;
the simulator calls it when a single acquisition is armed, which lets `ArraySource` and relative
`FunctionSource`s start at arm time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

TimeFunction = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class SignalSource(Protocol):
    """Anything with `volts(channel, t)`; the virtual board implements it with its live activity timeline."""

    def volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        """Noise-free volts at the probe tip of `channel` (1-based) at monotonic times t (seconds)."""
        ...


@runtime_checkable
class ClockedSource(SignalSource, Protocol):
    """A source with its own (simulation) clock: the simulator acquires in its time, not the host's."""

    def now(self) -> float:
        """The source's current time (seconds): everything before it is final."""
        ...

    def run_until(self, t: float) -> float:
        """Let the source's time run to `t` if nothing else drives it; return the time reached."""
        ...


def is_clocked(source: object) -> bool:
    """True for a source that brings its own clock (`ClockedSource`)."""
    return source is not None and callable(getattr(source, "now", None)) and callable(
        getattr(source, "run_until", None))


class FunctionSource:
    """One function of time per channel; channels without one read 0 V.

    With `relative_to_arm=True` each function receives t - t_arm (seconds since the scope was armed).
    """

    def __init__(self, functions: Mapping[int, TimeFunction], *, relative_to_arm: bool = False) -> None:
        self.functions = dict(functions)
        self.relative_to_arm = relative_to_arm
        self.t_arm = 0.0

    def arm(self, t_arm: float) -> None:
        """Remember the arm time (used only when `relative_to_arm`)."""
        self.t_arm = t_arm

    def volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        fn = self.functions.get(channel)
        if fn is None:
            return np.zeros_like(t)
        out = fn(t - self.t_arm if self.relative_to_arm else t)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), t.shape).copy()


class ArraySource:
    """Sampled signals (one array per channel, interval `dt`) starting `delay_s` after arm time.

    `periodic=True` repeats the arrays forever (a board already running when armed); otherwise the
    signal is padded before and after with `pad` (a number, or "edge" to hold the first/last sample).
    Values between samples are linearly interpolated.
    """

    def __init__(self, samples: Mapping[int, np.ndarray], dt: float, *, delay_s: float = 0.0,
                 periodic: bool = False, pad: float | str = "edge") -> None:
        if dt <= 0:
            raise ValueError(f"ArraySource dt must be positive, got {dt!r}")
        self.samples = {ch: np.asarray(v, dtype=np.float64) for ch, v in samples.items()}
        self.dt = float(dt)
        self.delay_s = float(delay_s)
        self.periodic = periodic
        self.pad = pad
        self.origin = self.delay_s

    def arm(self, t_arm: float) -> None:
        """Place sample 0 at `t_arm + delay_s`."""
        self.origin = t_arm + self.delay_s

    def volts(self, channel: int, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        y = self.samples.get(channel)
        if y is None or y.size == 0:
            return np.zeros_like(t)
        pos = (t - self.origin) / self.dt
        if self.periodic:
            pos = np.mod(pos, y.size)
            ext = np.append(y, y[0])  # interpolate across the wrap
            return np.interp(pos, np.arange(ext.size, dtype=np.float64), ext)
        if self.pad == "edge":
            left, right = y[0], y[-1]
        else:
            left = right = float(self.pad)
        return np.interp(pos, np.arange(y.size, dtype=np.float64), y, left=left, right=right)
