"""`PPK2Simulator`: a Nordic Power Profiler Kit II on a pseudo-terminal, speaking its USB CDC protocol.

Host -> device: one opcode byte and its arguments (AVERAGE_START 0x06, AVERAGE_STOP 0x07,
DEVICE_RUNNING_SET 0x0c on/off, REGULATOR_SET 0x0d hi lo, SET_POWER_MODE 0x11 1=ampere 2=source,
GET_META_DATA 0x19, RESET 0x20, SPIKE_FILTERING_ON/OFF 0x15/0x16, SET_USER_GAINS 0x25 range f32).
Device -> host: the calibration metadata as `key: value` lines ending in `END`, and while measuring a
stream of 100 000 little-endian 32-bit words per second:

    bits 0-13 ADC code, 14-16 current range (0-4), 18-23 sample counter (mod 64), 24-31 digital inputs D0-D7

Current = UG * (x * (GS * x + GI) + S * VDD/1000 + I) with x = (4 * code - O) * 1.8 / 163840 / R, all
per range, from the metadata. The simulator picks the range like the hardware's auto-ranging (the most
sensitive range that holds the sample) and quantizes through the inverse of that formula, so a host
library that applies the metadata gets the source's current back within one ADC step.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field

import numpy as np

from instruments.sim.meters.common import MeterFrontEnd, MeterProbe
from instruments.sim.signals import SignalSource

SAMPLE_RATE = 100_000
ADC_MULT = 1.8 / 163840
CODE_MAX = 0x3FFF
N_RANGES = 5
#: A range is used while the sample needs at most this fraction of its ADC span.
RANGE_HEADROOM = 0.9

# opcodes (the PPK2 firmware's command set)
NO_OP, AVERAGE_START, AVERAGE_STOP = 0x00, 0x06, 0x07
DEVICE_RUNNING_SET, REGULATOR_SET, SET_POWER_MODE = 0x0C, 0x0D, 0x11
SPIKE_FILTERING_ON, SPIKE_FILTERING_OFF = 0x15, 0x16
GET_META_DATA, RESET, SET_USER_GAINS = 0x19, 0x20, 0x25
SWITCH_POINT_DOWN, SWITCH_POINT_UP = 0x0E, 0x0F
#: Length of each accepted command including the opcode.
COMMAND_LENGTH = {AVERAGE_START: 1, AVERAGE_STOP: 1, DEVICE_RUNNING_SET: 2, REGULATOR_SET: 3, SET_POWER_MODE: 2,
                  SPIKE_FILTERING_ON: 1, SPIKE_FILTERING_OFF: 1, GET_META_DATA: 1, RESET: 1, SET_USER_GAINS: 6,
                  SWITCH_POINT_DOWN: 2, SWITCH_POINT_UP: 2}


@dataclass
class PPK2Calibration:
    """Per-range calibration as stored in a PPK2 and reported by GET_META_DATA (defaults: a plausible unit)."""

    r: tuple[float, ...] = (1003.39, 101.559, 10.2347, 0.934635, 0.0444102)
    gs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.004, 0.0)
    gi: tuple[float, ...] = (1.0012, 0.9987, 1.0006, 0.9971, 1.0)
    o: tuple[float, ...] = (112.3, 75.1, 64.4, 60.2, 58.9)
    s: tuple[float, ...] = (0.0, 0.0, 1.1e-7, 2.0e-6, 0.0)
    i: tuple[float, ...] = (0.0, 0.0, -2.0e-7, 3.0e-6, 0.0)
    ug: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    calibrated: int = 1
    hw: int = 9173
    ia: int = 56

    def metadata(self) -> bytes:
        """The GET_META_DATA answer: `key: value` lines, then `END`."""
        lines = [f"Calibrated: {self.calibrated}"]
        for key, values in (("R", self.r), ("GS", self.gs), ("GI", self.gi), ("O", self.o), ("S", self.s),
                            ("I", self.i), ("UG", self.ug)):
            lines += [f"{key}{k}: {v!r}" for k, v in enumerate(values)]
        lines += [f"HW: {self.hw}", f"IA: {self.ia}", "END"]
        return ("\n".join(lines) + "\n").encode("ascii")

    def full_scale_a(self, rng: int, vdd_mv: float) -> float:
        return float(self.current(np.array([CODE_MAX]), np.array([rng]), vdd_mv)[0])

    def current(self, codes: np.ndarray, ranges: np.ndarray, vdd_mv: float) -> np.ndarray:
        """Amperes from 14-bit codes and ranges (the formula the host applies)."""
        arr = {k: np.asarray(getattr(self, k), dtype=np.float64)[ranges] for k in ("r", "gs", "gi", "o", "s", "i",
                                                                                 "ug")}
        x = (codes.astype(np.float64) * 4 - arr["o"]) * (ADC_MULT / arr["r"])
        return arr["ug"] * (x * (arr["gs"] * x + arr["gi"]) + (arr["s"] * (vdd_mv / 1000) + arr["i"]))

    def codes(self, amps: np.ndarray, ranges: np.ndarray, vdd_mv: float) -> np.ndarray:
        """14-bit codes that read back closest to `amps` in `ranges` (inverse of `current`), clipped."""
        arr = {k: np.asarray(getattr(self, k), dtype=np.float64)[ranges] for k in ("r", "gs", "gi", "o", "s", "i",
                                                                                 "ug")}
        y = amps / arr["ug"] - (arr["s"] * (vdd_mv / 1000) + arr["i"])
        disc = np.sqrt(np.maximum(arr["gi"] ** 2 + 4 * arr["gs"] * y, 0.0))
        x = 2 * y / (arr["gi"] + disc)  # root of gs x^2 + gi x - y = 0 that tends to y/gi as gs -> 0
        adc = x * arr["r"] / ADC_MULT + arr["o"]
        return np.clip(np.rint(adc / 4), 0, CODE_MAX).astype(np.uint32)


@dataclass
class PPK2Faults:
    """Stream faults, counted in samples since the last AVERAGE_START; change them at any time."""

    stop_after_samples: int | None = None  # the stream stalls (a truncated measurement)
    skip_samples_at: int | None = None  # `skip_count` samples are never sent (counter gap)
    skip_count: int = 7
    bad_range_at: int | None = None  # range field 7 in that word (malformed)
    extra_byte_at: int | None = None  # one stray byte before that word (misaligned stream)
    no_metadata: bool = False  # GET_META_DATA is ignored


@dataclass
class PPK2State:
    mode: str | None = None  # "ampere" | "source"
    vdd_mv: float = 3300.0
    dut_power: bool = False
    measuring: bool = False
    spike_filter: bool = False
    user_gains: dict[int, float] = field(default_factory=dict)


class PPK2Simulator:
    """A PPK2 on a pty (`.port`), fed by a `SignalSource` through a `MeterProbe` (current A, marker on D`n`)."""

    def __init__(self, source: SignalSource | None = None, probe: MeterProbe | None = None, *, marker_input: int = 0,
                 noise_a: float = 0.0, seed: int | None = None, calibration: PPK2Calibration | None = None,
                 backlog_s: float = 0.5) -> None:
        if not 0 <= marker_input <= 7:
            raise ValueError(f"PPK2 digital inputs are D0..D7, got {marker_input}")
        self.front = MeterFrontEnd(source, probe, noise_a=noise_a, seed=seed)
        self.marker_input = marker_input
        self.calibration = calibration or PPK2Calibration()
        self.state = PPK2State()
        self.faults = PPK2Faults()
        self.commands: list[bytes] = []  # every command received, opcode first
        self.unknown: list[int] = []  # opcodes the firmware would not know
        self.samples_sent = 0
        self.samples_dropped = 0  # host too slow: the device's buffer overflowed
        self.backlog_bytes = int(backlog_s * SAMPLE_RATE) * 4
        self._master: int | None = None
        self._slave: int | None = None
        self.port = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._rx = bytearray()
        self._t_start = 0.0
        self._k = 0  # next sample index of this run
        self._emitted = 0  # next index to send (after skips)

    @property
    def source(self) -> SignalSource | None:
        return self.front.source

    @source.setter
    def source(self, value: SignalSource | None) -> None:
        self.front.source = value

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> PPK2Simulator:
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ppk2-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def __enter__(self) -> PPK2Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the device -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            wait = 0.002 if (self.state.measuring or self._pending) else 0.02
            try:
                r, _, _ = select.select([self._master], [], [], wait)
                if r:
                    data = os.read(self._master, 4096)
                    with self._lock:
                        self._rx += data
                        self._parse()
            except OSError:  # no reader on the slave side yet: nothing to read
                time.sleep(wait)
            with self._lock:
                if self.state.measuring:
                    self._produce(self.front.now())
                self._flush()

    def _parse(self) -> None:
        while self._rx:
            op = self._rx[0]
            n = COMMAND_LENGTH.get(op)
            if n is None:
                self.unknown.append(op)
                self.commands.append(bytes(self._rx[:1]))
                del self._rx[:1]
                continue
            if len(self._rx) < n:
                return
            cmd = bytes(self._rx[:n])
            del self._rx[:n]
            self.commands.append(cmd)
            self._execute(cmd)

    def _execute(self, cmd: bytes) -> None:
        op, st = cmd[0], self.state
        if op == AVERAGE_START:
            if not st.measuring:
                st.measuring = True
                self._t_start = self.front.arm()
                self._k = self._emitted = 0
        elif op == AVERAGE_STOP:
            st.measuring = False
        elif op == DEVICE_RUNNING_SET:
            st.dut_power = cmd[1] == 1
        elif op == REGULATOR_SET:
            st.vdd_mv = float((cmd[1] - 3) * 256 + cmd[2] + 800 - 32)
        elif op == SET_POWER_MODE:
            st.mode = {1: "ampere", 2: "source"}.get(cmd[1], st.mode)
        elif op in (SPIKE_FILTERING_ON, SPIKE_FILTERING_OFF):
            st.spike_filter = op == SPIKE_FILTERING_ON
        elif op == SET_USER_GAINS:
            st.user_gains[cmd[1]] = float(np.frombuffer(cmd[2:6], "<f4")[0])
        elif op == GET_META_DATA:
            if not self.faults.no_metadata:
                self._pending += self.calibration.metadata()
        elif op == RESET:
            self.state = PPK2State()
            self._pending.clear()

    def words(self, k0: int, k1: int) -> np.ndarray:
        """Sample words k0..k1-1 of the current run (times from the AVERAGE_START)."""
        dt = 1.0 / SAMPLE_RATE
        t = self._t_start + dt * np.arange(k0, k1, dtype=np.float64)
        st, cal = self.state, self.calibration
        amps = self.front.current(t, dt)
        if st.mode == "source" and not st.dut_power:
            amps = np.zeros_like(amps)
        ranges = np.full(amps.size, N_RANGES - 1, dtype=np.uint32)
        for rng in range(N_RANGES - 2, -1, -1):  # the most sensitive range that holds the sample wins
            ranges[amps <= RANGE_HEADROOM * cal.full_scale_a(rng, st.vdd_mv)] = rng
        codes = cal.codes(amps, ranges, st.vdd_mv)
        bits = self.front.logic(t).astype(np.uint32) << self.marker_input
        counter = (np.arange(k0, k1, dtype=np.uint32) & 0x3F)
        return codes | (ranges << 14) | (counter << 18) | (bits << 24)

    def _produce(self, now: float) -> None:
        f = self.faults
        k_end = int((now - self._t_start) * SAMPLE_RATE)
        if f.stop_after_samples is not None:
            k_end = min(k_end, f.stop_after_samples)
        if self.front.clocked:  # simulated time jumps a whole run at once: stream it as the host reads, no loss
            k_end = min(k_end, self._k + max(self.backlog_bytes - len(self._pending), 0) // 4)
        if k_end <= self._k:
            return
        words = self.words(self._k, k_end)
        idx = np.arange(self._k, k_end)
        keep = np.ones(words.size, bool)
        if f.skip_samples_at is not None:
            keep &= ~((idx >= f.skip_samples_at) & (idx < f.skip_samples_at + f.skip_count))
        if f.bad_range_at is not None:
            words[idx == f.bad_range_at] |= 0x7 << 14
        out = bytearray()
        if f.extra_byte_at is not None and self._k <= f.extra_byte_at < k_end:
            cut = f.extra_byte_at - self._k
            out += words[:cut][keep[:cut]].astype("<u4").tobytes() + b"\x5a"
            out += words[cut:][keep[cut:]].astype("<u4").tobytes()
        else:
            out += words[keep].astype("<u4").tobytes()
        self._k = k_end
        self.samples_sent += int(keep.sum())
        room = self.backlog_bytes - len(self._pending)
        if len(out) > room:  # the host does not read: the newest samples are lost, as on the device
            keep_bytes = max(room, 0) // 4 * 4
            self.samples_dropped += (len(out) - keep_bytes) // 4
            out = out[:keep_bytes]
        self._pending += out

    def _flush(self) -> None:
        while self._pending:
            try:
                n = os.write(self._master, self._pending[:65536])
            except (BlockingIOError, OSError):
                return
            if n <= 0:
                return
            del self._pending[:n]
