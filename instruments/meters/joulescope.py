"""Joulescope JS220 / JS110 through `pyjoulescope_driver` (the vendor's C driver with Python bindings).

The device is opened by its path (`u/js220/<serial>`; an empty resource takes the only one attached), set
to automatic current ranging and the output rate `h/fs`, and the current (`s/i/!data`, float32 A) and one
general-purpose input (`s/gpi/N/!data`, packed bits) are streamed between `arm()` and `capture()`. Every
message's `sample_id` must continue the previous one; a gap, a stall or a non-finite sample raises
`MeterStreamError`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from instruments.errors import InstrumentError
from instruments.meters.base import CurrentMeter, MeterLimits, MeterStreamError, current_waveform, logic_waveform

OUTPUT_RATES = (2_000_000, 1_000_000, 500_000, 200_000, 100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000)
#: JS220 current ranges (A, full scale), most sensitive last; nominal step = full scale / 2**15.
CURRENT_RANGES = (10.0, 0.18, 0.018, 0.0018, 180e-6, 18e-6)


class _Stream:
    """Messages of one topic, checked for continuity of `sample_id`."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, Any]] = []
        self.decimate: int | None = None
        self.rate: float | None = None
        self.error: str | None = None
        self.next_id: int | None = None
        self.count = 0


class JoulescopeMeter(CurrentMeter, kind="joulescope"):
    """A Joulescope in series with the board's supply; current plus the marker on general-purpose input N."""

    limits = MeterLimits(
        model="Joulescope JS220 (JS110)",
        sample_rates=tuple(float(r) for r in OUTPUT_RATES),
        max_current_a=10.0,
        ranges=("auto over 10 A / 180 mA / 18 mA / 1.8 mA / 180 uA / 18 uA (JS220; nominal step full scale/2^15)",),
        range_switching="fast automatic switching (JS220: no dropout; JS110: a few-microsecond glitch that its "
                        "suppression filter replaces); ESP32 currents sit in the 180 mA range, WiFi bursts in 10 A",
        digital_inputs="JS220: GPI 0-3 (and trigger in), levels set by the IO voltage (1.8-5 V); JS110: IN0, IN1",
        marker_input_default=0,
    )

    def __init__(self, resource: str = "", *, sample_rate: float = 1_000_000, marker_input: int = 0,
                 io_voltage: str | None = None, driver_class: Any = None, timeout_s: float = 5.0) -> None:
        super().__init__(resource)
        if int(sample_rate) not in OUTPUT_RATES:
            raise InstrumentError(f"Joulescope sample_rate must be one of {OUTPUT_RATES}, got {sample_rate!r}")
        if not 0 <= int(marker_input) <= 3:
            raise InstrumentError(f"Joulescope marker_input must be GPI 0-3, got {marker_input!r}")
        if driver_class is None:
            try:
                from pyjoulescope_driver import Driver as driver_class
            except ImportError as exc:
                raise InstrumentError(f"the Joulescope driver needs pyjoulescope_driver "
                                      f"(pip install pyjoulescope_driver): {exc}") from None
        self.sample_rate, self.marker_input = float(sample_rate), int(marker_input)
        self.io_voltage, self.timeout_s = io_voltage, float(timeout_s)
        self.drv = driver_class()
        self.path: str | None = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._i = _Stream()
        self._g = _Stream()

    def _setup(self) -> None:
        paths = list(self.drv.device_paths())
        match = [p for p in paths if not self.resource or self.resource == p or p.endswith("/" + self.resource)]
        if not match:
            found = ", ".join(paths) or "none"
            raise InstrumentError(f"no Joulescope {self.resource or ''} found (attached: {found}); check USB and "
                                  "the udev rules".replace("  ", " "))
        if len(match) > 1:
            raise InstrumentError(f"several Joulescopes attached ({', '.join(match)}); pass the path or serial")
        self.path = p = match[0]
        try:
            self.drv.open(p, "defaults")
        except Exception as exc:
            self.path = None
            raise InstrumentError(f"cannot open Joulescope {p}: {exc}") from None
        parts = p.split("/")
        self.model = parts[1].upper() if len(parts) > 1 else "Joulescope"
        self.serial_number = parts[2] if len(parts) > 2 else ""
        fw = self._query("c/fw/version")
        self.idn = f"Jetperch,{self.model},{self.serial_number},FW {fw}"
        try:
            self.drv.publish(f"{p}/s/i/range/mode", "auto")
            self.drv.publish(f"{p}/h/fs", int(self.sample_rate))
            if self.io_voltage is not None:
                self.drv.publish(f"{p}/s/extio/voltage", self.io_voltage)
        except Exception as exc:
            raise InstrumentError(f"configuring Joulescope {p} failed: {exc}") from None

    def _query(self, sub: str) -> Any:
        try:
            return self.drv.query(f"{self.path}/{sub}")
        except Exception:
            return "unknown"

    def _settings(self) -> dict[str, Any]:
        return {"path": self.path, "current_range": "auto", "io_voltage": self.io_voltage,
                "calibration": {"factory": "stored in the device", "hw": self._query("c/hw/version")}}

    # ---- streaming ------------------------------------------------------------------------------
    def _on(self, stream: _Stream):
        def handler(topic: str, value: dict) -> None:
            with self._lock:
                if stream.error is not None:
                    return
                try:
                    sid, dec = int(value["sample_id"]), int(value["decimate_factor"])
                    data = value["data"]
                    if stream.next_id is not None and sid != stream.next_id:
                        lost = (sid - stream.next_id) // max(dec, 1)
                        stream.error = (f"{topic}: sample_id {sid} where {stream.next_id} was due "
                                        f"({lost} samples lost)")
                        return
                    stream.decimate, stream.rate = dec, float(value["sample_rate"]) / dec
                    stream.chunks.append((sid, data))
                    n = len(data) if stream is self._i else None
                    if n is not None:
                        stream.count += n
                        stream.next_id = sid + n * dec
                except (KeyError, TypeError, ValueError) as exc:
                    stream.error = f"{topic}: malformed message ({type(exc).__name__}: {exc})"
        return handler

    def _start(self) -> None:
        p = self.path
        self._i, self._g = _Stream(), _Stream()
        self._i_fn, self._g_fn = self._on(self._i), self._on(self._g)
        self.drv.subscribe(f"{p}/s/i/!data", "pub", self._i_fn)
        self.drv.subscribe(f"{p}/s/gpi/{self.marker_input}/!data", "pub", self._g_fn)
        self.drv.publish(f"{p}/s/gpi/{self.marker_input}/ctrl", 1)
        self.drv.publish(f"{p}/s/i/ctrl", 1)

    def _stop_stream(self) -> None:
        p = self.path
        for topic, value in ((f"{p}/s/i/ctrl", 0), (f"{p}/s/gpi/{self.marker_input}/ctrl", 0)):
            try:
                self.drv.publish(topic, value)
            except Exception:
                pass
        self.drv.unsubscribe(f"{p}/s/i/!data", self._i_fn)
        self.drv.unsubscribe(f"{p}/s/gpi/{self.marker_input}/!data", self._g_fn)

    def _stop_quietly(self) -> None:
        self._stop_stream()

    def _finish(self, duration_s: float, marker: bool, timeout_s: float):
        n = self._n_samples(duration_s)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                with self._lock:
                    if self._i.count >= n or self._i.error:
                        break
                time.sleep(0.005)
        finally:
            self._stop_stream()
        i = self._i
        if i.error:
            raise MeterStreamError(f"Joulescope {self.path} stream broken: {i.error}")
        if i.count < n:
            raise MeterStreamError(f"Joulescope {self.path} stream truncated: {i.count} of {n} samples arrived")
        if i.rate is None or abs(i.rate - self.sample_rate) > 1e-6 * self.sample_rate:
            raise MeterStreamError(f"Joulescope streamed at {i.rate} S/s, {self.sample_rate:g} was set")
        sid0, dec = i.chunks[0][0], i.decimate
        amps = np.concatenate([np.asarray(d, dtype=np.float64) for _, d in i.chunks])[:n]
        fit = [r for r in CURRENT_RANGES if r >= float(np.max(np.abs(amps), initial=0.0))] if amps.size else []
        full_scale = min(fit) if fit else CURRENT_RANGES[0]
        clipped = not fit
        dt = 1.0 / self.sample_rate
        prov = self.provenance()
        current = current_waveform(amps, dt, channel="current", resolution_a=full_scale / 2**15,
                                   full_scale_a=full_scale, idn=self.idn, settings=prov, clipped=clipped)
        if not marker:
            return current, None
        levels = self._gpi_levels(sid0, dec, n)
        return current, logic_waveform(levels, dt, channel=f"GPI{self.marker_input}", idn=self.idn, settings=prov)

    def _gpi_levels(self, sid0: int, dec: int, n: int) -> np.ndarray:
        """The marker samples aligned on the current's sample ids (packed bits, sizes from the current)."""
        sizes = {sid: len(d) for sid, d in self._i.chunks}
        out = np.full(n, -1, dtype=np.int8)
        for sid, packed in self._g.chunks:
            count = sizes.get(sid)
            if count is None:
                continue
            bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[:count]
            if bits.size < count:
                raise MeterStreamError(f"Joulescope GPI{self.marker_input} message at {sid} holds {bits.size} "
                                       f"of {count} samples")
            k = (sid - sid0) // dec
            lo, hi = max(k, 0), min(k + count, n)
            if hi > lo:
                out[lo:hi] = bits[lo - k:hi - k]
        missing = np.flatnonzero(out < 0)
        if self._g.error or missing.size:
            what = self._g.error or f"{missing.size} of {n} samples missing from sample {int(missing[0])}"
            raise MeterStreamError(f"Joulescope GPI{self.marker_input} stream broken: {what}")
        return out.astype(np.float64)

    def close(self) -> None:
        drv = getattr(self, "drv", None)
        if drv is None:
            return
        try:
            if self.path is not None:
                drv.close(self.path)
        except Exception:
            pass
        finally:
            try:
                drv.finalize()
            finally:
                self.drv = None
