"""`JoulescopeSimulator`: a Joulescope JS220/JS110 at the level of `pyjoulescope_driver.Driver`'s Python API.

The real driver is a C library (libusb) compiled into the wheel; there is no hook to put a simulated
device under it without emulating USB. So this simulator replaces the `Driver` object instead: it offers
the same calls (`device_paths`, `open`, `close`, `publish`, `query`, `subscribe`, `unsubscribe`,
`finalize`, context manager) and publishes stream messages with the binding's layout:

    {"sample_id": first sample in 2 MS/s counts, "utc": time64, "field_id": ..., "index": ...,
     "sample_rate": 2_000_000, "decimate_factor": 2e6 / h/fs, "time_map": {...}, "data": ndarray}

`s/i/!data` carries float32 amperes, `s/gpi/N/!data` packed uint1 (8 samples per byte, first sample in the
least significant bit). Pass `sim.driver_class` to `JoulescopeMeter(driver_class=...)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from instruments.sim.meters.common import MeterFrontEnd, MeterProbe
from instruments.sim.signals import SignalSource

BASE_RATE = 2_000_000
OUTPUT_RATES = (2_000_000, 1_000_000, 500_000, 200_000, 100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000)
CHUNK_S = 0.01
TIME64_ONE = 1 << 30  # time64: 34.30 fixed point seconds


@dataclass
class JoulescopeFaults:
    gap_after_samples: int | None = None  # one chunk is never published (a sample_id gap)
    stop_after_samples: int | None = None  # the stream stalls
    nan_at: int | None = None  # a NaN current sample


class JoulescopeSimulator:
    """One simulated JS220 (`u/js220/<serial>`) fed by a `SignalSource`; `driver_class` builds Driver look-alikes."""

    def __init__(self, source: SignalSource | None = None, probe: MeterProbe | None = None, *, model: str = "js220",
                 serial: str = "000415", noise_a: float = 0.0, seed: int | None = None, marker_input: int = 0,
                 present: bool = True) -> None:
        self.front = MeterFrontEnd(source, probe, noise_a=noise_a, seed=seed)
        self.model, self.serial = model, serial
        self.path = f"u/{model}/{serial}"
        self.marker_input = marker_input
        self.present = present
        self.faults = JoulescopeFaults()
        self.published: list[tuple[str, Any]] = []  # every publish, in order (the "wire" at this level)
        self.values: dict[str, Any] = {"h/fs": 1_000_000, "s/i/range/mode": "auto", "c/fw/version": "1.2.1",
                                       "c/hw/version": "1.0.0"}

    @property
    def source(self) -> SignalSource | None:
        return self.front.source

    @source.setter
    def source(self, value: SignalSource | None) -> None:
        self.front.source = value

    @property
    def driver_class(self) -> Callable[[], SimulatedDriver]:
        return lambda: SimulatedDriver(self)


class SimulatedDriver:
    """The subset of `pyjoulescope_driver.Driver` the harness uses, against a `JoulescopeSimulator`."""

    def __init__(self, sim: JoulescopeSimulator) -> None:
        self.sim = sim
        self._subs: dict[str, list[Callable[[str, Any], None]]] = {}
        self._open = False
        self._thread: threading.Thread | None = None
        self._streaming = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> SimulatedDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finalize()

    def device_paths(self, timeout=None) -> list[str]:
        return [self.sim.path] if self.sim.present else []

    def _check(self, topic: str) -> str:
        prefix = self.sim.path + "/"
        if not topic.startswith(prefix):
            raise RuntimeError(f"jsdrv: no device for topic {topic}")
        if not self._open:
            raise RuntimeError(f"jsdrv: device {self.sim.path} is not open")
        return topic[len(prefix):]

    def open(self, device_prefix: str, mode=None, timeout=None) -> None:
        if device_prefix != self.sim.path or not self.sim.present:
            raise RuntimeError(f"jsdrv: device {device_prefix} not found")
        self.sim.published.append((device_prefix, f"open:{mode or 'defaults'}"))
        self._open = True

    def close(self, device_prefix: str, timeout=None) -> None:
        self._stop_stream()
        self.sim.published.append((device_prefix, "close"))
        self._open = False

    def finalize(self) -> None:
        self._stop_stream()
        self._open = False

    def query(self, topic: str, timeout=None) -> Any:
        sub = self._check(topic)
        if sub not in self.sim.values:
            raise RuntimeError(f"jsdrv: query {topic} failed")
        return self.sim.values[sub]

    def publish(self, topic: str, value: Any, timeout=None) -> None:
        sub = self._check(topic)
        self.sim.published.append((topic, value))
        if sub == "h/fs" and int(value) not in OUTPUT_RATES:
            raise RuntimeError(f"jsdrv: invalid value {value} for {topic}")
        self.sim.values[sub] = value
        if sub == "s/i/ctrl":
            if value:
                self._start_stream()
            else:
                self._stop_stream()

    def subscribe(self, topic: str, flags, fn, timeout=None) -> None:
        with self._lock:
            self._subs.setdefault(topic, []).append(fn)

    def unsubscribe(self, topic: str, fn, timeout=None) -> None:
        with self._lock:
            if fn in self._subs.get(topic, []):
                self._subs[topic].remove(fn)

    # ---- streaming ------------------------------------------------------------------------------
    def _start_stream(self) -> None:
        self._stop_stream()
        self._streaming.set()
        self._thread = threading.Thread(target=self._stream, name="js-sim", daemon=True)
        self._thread.start()

    def _stop_stream(self) -> None:
        self._streaming.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._thread = None

    def _emit(self, topic: str, value: dict) -> None:
        with self._lock:
            fns = list(self._subs.get(topic, []))
        for fn in fns:
            fn(topic, value)

    def _stream(self) -> None:
        sim, f = self.sim, self.sim.faults
        fs = int(sim.values["h/fs"])
        decimate = BASE_RATE // fs
        dt = 1.0 / fs
        t_start = sim.front.arm()
        sid0 = 1_000_000  # the device's sample counter does not start at 0
        k = 0
        utc0 = int(time.time() * TIME64_ONE)
        time_map = {"offset_time": utc0, "offset_counter": sid0, "counter_rate": float(BASE_RATE)}
        while self._streaming.is_set():
            time.sleep(CHUNK_S / 2)
            k_end = int((sim.front.now() - t_start) * fs)
            if f.stop_after_samples is not None:
                k_end = min(k_end, f.stop_after_samples)
            if k_end <= k:
                continue
            t = t_start + dt * np.arange(k, k_end)
            amps = sim.front.current(t, dt).astype(np.float32)
            if f.nan_at is not None and k <= f.nan_at < k_end:
                amps[f.nan_at - k] = np.nan
            skip = f.gap_after_samples is not None and k <= f.gap_after_samples < k_end
            if skip:
                f.gap_after_samples = None
            else:
                base = {"sample_id": sid0 + k * decimate, "utc": utc0 + int(k * dt * TIME64_ONE), "field_id": 1,
                        "index": 0, "sample_rate": BASE_RATE, "decimate_factor": decimate, "time_map": time_map}
                self._emit(f"{sim.path}/s/i/!data", {**base, "data": amps})
                for pin in range(4):  # every enabled input streams; only the wired one sees the marker
                    if sim.values.get(f"s/gpi/{pin}/ctrl"):
                        lv = sim.front.logic(t) if pin == sim.marker_input else np.zeros(t.size, np.uint8)
                        self._emit(f"{sim.path}/s/gpi/{pin}/!data",
                                   {**base, "field_id": 6, "index": pin, "data": np.packbits(lv, bitorder="little")})
            k = k_end
