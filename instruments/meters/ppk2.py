"""Nordic Power Profiler Kit II through `ppk2-api` (USB CDC serial).

`ppk2-api` opens the port, reads the calibration metadata and sends the commands (ampere-meter or
source-meter mode, supply voltage, DUT power, start/stop). The raw stream is decoded here rather than with
`PPK2_API.get_samples`, because that function drops out-of-range words with a print and ignores the sample
counter: this driver checks every word (range field 0-4, counter +1 mod 64) and raises `MeterStreamError`
on a malformed, misaligned or gapped stream instead of returning a figure built on it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from instruments.errors import InstrumentError
from instruments.meters.base import CurrentMeter, MeterLimits, MeterStreamError, current_waveform, logic_waveform

SAMPLE_RATE = 100_000
ADC_MULT = 1.8 / 163840
CODE_MAX = 0x3FFF
N_RANGES = 5
MODES = ("ampere", "source")


def decode(raw: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first `n` words of a measurement stream: (codes, ranges, counters, logic bits); checked.

    Raises `MeterStreamError` if fewer than `n` whole words arrived, a range field is 5-7, or the 6-bit
    counter does not advance by one per word (lost samples or a stray byte that misaligned the stream).
    """
    have = len(raw) // 4
    if have < n:
        raise MeterStreamError(f"PPK2 stream truncated: {have} of {n} samples arrived "
                               f"({len(raw)} bytes); the device stopped streaming or the cable dropped")
    words = np.frombuffer(raw, dtype="<u4", count=n)
    codes = words & CODE_MAX
    ranges = (words >> 14) & 0x7
    counters = (words >> 18) & 0x3F
    bits = (words >> 24) & 0xFF
    bad = np.flatnonzero(ranges >= N_RANGES)
    if bad.size:
        k = int(bad[0])
        raise MeterStreamError(f"PPK2 stream malformed: sample {k} has range field {int(ranges[k])} "
                               f"(word 0x{int(words[k]):08x}); valid ranges are 0-4")
    steps = (np.diff(counters.astype(np.int16)) & 0x3F) if n > 1 else np.zeros(0, np.int16)
    gap = np.flatnonzero(steps != 1)
    if gap.size:
        k = int(gap[0]) + 1
        raise MeterStreamError(f"PPK2 stream broken at sample {k}: counter went {int(counters[k - 1])} -> "
                               f"{int(counters[k])}; samples were lost or the stream is misaligned "
                               "(host too slow, USB error or a stray byte)")
    return codes, ranges, counters, bits


class Calibration:
    """The per-range modifiers `ppk2-api` read from the device (`PPK2_API.modifiers`), as arrays."""

    KEYS = ("R", "GS", "GI", "O", "S", "I", "UG")

    def __init__(self, modifiers: dict[str, Any]) -> None:
        self.modifiers = {k: {str(r): float(modifiers[k][str(r)]) for r in range(N_RANGES)} for k in self.KEYS}
        self.calibrated = modifiers.get("Calibrated")
        self.hw = modifiers.get("HW")
        self.arrays = {k: np.array([self.modifiers[k][str(r)] for r in range(N_RANGES)]) for k in self.KEYS}

    def current(self, codes: np.ndarray, ranges: np.ndarray, vdd_mv: float) -> np.ndarray:
        """Amperes: UG * (x * (GS * x + GI) + S * VDD + I) with x = (4 code - O) * 1.8 / 163840 / R."""
        a = {k: v[ranges] for k, v in self.arrays.items()}
        x = (codes.astype(np.float64) * 4 - a["O"]) * (ADC_MULT / a["R"])
        return a["UG"] * (x * (a["GS"] * x + a["GI"]) + (a["S"] * (vdd_mv / 1000) + a["I"]))

    def step_a(self, rng: int) -> float:
        """One ADC step (4 counts) in range `rng`, in A."""
        a = {k: float(v[rng]) for k, v in self.arrays.items()}
        return abs(a["UG"] * a["GI"] * 4 * ADC_MULT / a["R"])

    def to_dict(self) -> dict[str, Any]:
        return {"calibrated": self.calibrated, "hw": self.hw, "modifiers": self.modifiers}


class PPK2Meter(CurrentMeter, kind="ppk2"):
    """A PPK2 in ampere-meter mode (in series with the board's supply) or source-meter mode (it powers the board).

    `supply_mv`: the source voltage in source mode; in ampere mode the value the calibration's supply term
    uses (set it to the board's supply). `marker_input`: the logic port input D0-D7 that carries the marker.
    """

    limits = MeterLimits(
        model="PPK2",
        sample_rates=(100_000.0,),
        max_current_a=1.0,
        ranges=("R0 <~0.7 mA (~43 nA/step)", "R1 <~7 mA (~0.43 uA/step)", "R2 <~70 mA (~4.3 uA/step)",
                "R3 <~0.7 A (~47 uA/step)", "R4 to 1 A (~1 mA/step)"),
        range_switching="automatic in hardware, no fixed range; a few samples after a switch can spike "
                        "(nRF Connect applies a spike filter; this driver reports the switch count)",
        digital_inputs="8 (D0-D7) on the logic port, referenced to its VCC pin (1.6-5.5 V): wire VCC to 3.3 V",
        marker_input_default=0,
    )

    def __init__(self, resource: str, *, mode: str = "ampere", supply_mv: float = 3300.0, marker_input: int = 0,
                 timeout_s: float = 2.0, api_class: Any = None) -> None:
        super().__init__(resource)
        if mode not in MODES:
            raise InstrumentError(f"PPK2 mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 800 <= supply_mv <= 5000:
            raise InstrumentError(f"PPK2 supply_mv must be 800-5000 mV, got {supply_mv!r}")
        if not 0 <= int(marker_input) <= 7:
            raise InstrumentError(f"PPK2 marker_input must be a logic input 0-7 (D0-D7), got {marker_input!r}")
        if api_class is None:
            try:
                from ppk2_api.ppk2_api import PPK2_API as api_class
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise InstrumentError(f"the PPK2 driver needs ppk2-api (pip install ppk2-api): {exc}") from None
        self.mode, self.supply_mv, self.marker_input = mode, float(supply_mv), int(marker_input)
        self.sample_rate = float(SAMPLE_RATE)
        self.timeout_s = float(timeout_s)
        try:
            self.api = api_class(resource, timeout=self.timeout_s, write_timeout=self.timeout_s)
        except Exception as exc:
            raise InstrumentError(f"cannot open the PPK2 at {resource}: {exc}") from None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        self._buf = bytearray()
        self._reader: threading.Thread | None = None
        self._reading = threading.Event()
        self._read_error: BaseException | None = None
        self.range_switches = 0
        self.ranges_used: list[int] = []

    def _setup(self) -> None:
        api = self.api
        api.ser.reset_input_buffer()
        api.stop_measuring()  # a previous session may have left it streaming
        self._drain()
        if not api.get_modifiers():
            raise InstrumentError(f"no PPK2 calibration metadata from {self.resource}: not a PPK2, or another "
                                  "program holds it")
        self.calibration = Calibration(api.modifiers)
        if self.mode == "ampere":
            api.use_ampere_meter()
        else:
            api.use_source_meter()
        api.set_source_voltage(int(round(self.supply_mv)))
        if self.mode == "source":
            api.toggle_DUT_power("ON")
        self.serial_number = _usb_serial(self.resource)
        self.model = "PPK2"
        self.idn = f"Nordic Semiconductor,PPK2,{self.serial_number},HW {self.calibration.hw}"

    def _drain(self, quiet_s: float = 0.03, limit_s: float = 1.0) -> None:
        """Read and discard until the line has been quiet for `quiet_s`."""
        end = time.monotonic() + limit_s
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet_s:
            if self.api.get_data():
                last = time.monotonic()
            time.sleep(0.002)

    def _settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "supply_mv": self.supply_mv, "calibration": self.calibration.to_dict(),
                "range_switches": self.range_switches, "ranges_used": self.ranges_used}

    # ---- acquisition ----------------------------------------------------------------------------
    def _start(self) -> None:
        self._stop_reader()
        self._drain(quiet_s=0.01)
        self.api.ser.reset_input_buffer()
        self._buf = bytearray()
        self._read_error = None
        self._reading.set()
        self.api.start_measuring()
        self._reader = threading.Thread(target=self._read_loop, name="ppk2-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        try:
            while self._reading.is_set():
                data = self.api.get_data()
                if data:
                    self._buf += data
                else:
                    time.sleep(0.001)
        except Exception as exc:  # surfaced by _finish as one error
            self._read_error = exc

    def _stop_reader(self) -> None:
        self._reading.clear()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None

    def _stop_quietly(self) -> None:
        self._stop_reader()
        self.api.stop_measuring()

    def _finish(self, duration_s: float, marker: bool, timeout_s: float):
        n = self._n_samples(duration_s)
        deadline = time.monotonic() + timeout_s
        try:
            while len(self._buf) < 4 * n and time.monotonic() < deadline and self._read_error is None:
                time.sleep(0.005)
        finally:
            self._stop_reader()
            self.api.stop_measuring()
        if self._read_error is not None:
            raise InstrumentError(f"reading the PPK2 at {self.resource} failed: {self._read_error}")
        raw = bytes(self._buf)
        codes, ranges, _, bits = decode(raw, n)
        amps = self.calibration.current(codes, ranges, self.supply_mv)
        used = sorted({int(r) for r in np.unique(ranges)})
        self.ranges_used = used
        self.range_switches = int(np.count_nonzero(np.diff(ranges.astype(np.int16))))
        clipped = bool(np.any((codes >= CODE_MAX) & (ranges == N_RANGES - 1)))
        step = max(self.calibration.step_a(r) for r in used)
        dt = 1.0 / self.sample_rate
        prov = self.provenance()
        current = current_waveform(amps, dt, channel="I", resolution_a=step, full_scale_a=self.limits.max_current_a,
                                   idn=self.idn, settings=prov, clipped=clipped, adc_bits=14)
        mk = None
        if marker:
            levels = (bits >> self.marker_input) & 1
            mk = logic_waveform(levels, dt, channel=f"D{self.marker_input}", idn=self.idn, settings=prov)
        return current, mk

    def close(self) -> None:
        api = getattr(self, "api", None)
        if api is None:
            return
        if hasattr(self, "_reading"):
            self._stop_reader()
        try:
            api.stop_measuring()
            if self.mode == "source":
                api.toggle_DUT_power("OFF")
        finally:
            if getattr(api, "ser", None) is not None:
                api.ser.close()
            self.api = None


def _usb_serial(port: str) -> str:
    """The USB serial number of `port` (a real PPK2 enumerates as product 'PPK2'), or 'unknown'."""
    try:
        from serial.tools import list_ports
        for info in list_ports.comports():
            if info.device == port and info.serial_number:
                return str(info.serial_number)
    except Exception:  # pragma: no cover - enumeration is best effort
        pass
    return "unknown"

