"""A host client for MLPerf Tiny (EEMBC EnergyRunner) benchmark firmware over a serial port (pyserial URL).

It sends one command at a time and reads lines until `m-ready`, as the reference runner does, but checks what
the runner lets pass: an `e-[...]` error, a `db load` whose byte count the DUT does not confirm, an `infer`
reply out of order or without its timestamps, a malformed `m-results`. Each is one MlperfError naming the
command and the line; a DUT that never says `m-ready` is an MlperfTimeout.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

from hil.dut import mlperf_wire as wire
from hil.dut.mlperf_wire import InferReply, MlperfError

LINE_TIMEOUT_S = 5.0  # the reference runner's per-line timeout (serial_device.py)
INFER_LINE_TIMEOUT_S = 30.0  # and for `infer`, whose DUT is silent during the N inferences


class MlperfTimeout(MlperfError):
    """The DUT said nothing for the per-line timeout, or never ended its reply with `m-ready`."""


class MlperfTinyClient:
    """One MLPerf Tiny DUT on `port` (a device path or a pyserial URL such as `socket://` or `rfc2217://`)."""

    def __init__(self, port: str | Any, *, baudrate: int = 115200, energy_mode: bool = False,
                 line_timeout_s: float = LINE_TIMEOUT_S, infer_line_timeout_s: float = INFER_LINE_TIMEOUT_S):
        self.port = port
        self.baudrate = baudrate
        self.energy_mode = energy_mode
        self.line_timeout_s = line_timeout_s
        self.infer_line_timeout_s = infer_line_timeout_s
        self.last_lines: collections.deque[str] = collections.deque(maxlen=30)
        self._ser: Any = None
        self._buf = bytearray()

    # -- the link ------------------------------------------------------------------------------------
    def open(self) -> MlperfTinyClient:
        """Open the port and discard what the DUT printed before (its boot banner)."""
        import serial

        if isinstance(self.port, str):
            try:
                self._ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise MlperfError(f"cannot open the MLPerf Tiny DUT's port {self.port}: {exc}") from None
        else:
            self._ser = self.port
        self._ser.reset_input_buffer()
        return self

    def close(self) -> None:
        if self._ser is not None and isinstance(self.port, str):
            self._ser.close()
        self._ser = None

    def __enter__(self) -> MlperfTinyClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return raw.rstrip(b"\r").decode("ascii", errors="replace")
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self._ser.read(self._ser.in_waiting or 1)
            except Exception as exc:  # serial.SerialException, OSError: the port went away
                raise MlperfError(f"serial port {self.port} failed: {exc}", lines=list(self.last_lines)) from None
            self._buf.extend(chunk)

    def request(self, text: str, *, line_timeout_s: float | None = None) -> list[str]:
        """Send one command and return its reply's lines before `m-ready`; an `e-[...]` line is an MlperfError."""
        if self._ser is None:
            raise MlperfError("MlperfTinyClient is not open; call open() or use it as a context manager")
        timeout = self.line_timeout_s if line_timeout_s is None else line_timeout_s
        try:
            self._ser.write(wire.command(text))
            self._ser.flush()
        except Exception as exc:
            raise MlperfError(f"cannot write to serial port {self.port}: {exc}") from None
        lines: list[str] = []
        while True:
            line = self._readline(timeout)
            if line is None:
                said = f"; it said {lines[-3:]}" if lines else ", nothing at all"
                raise MlperfTimeout(f"the MLPerf Tiny DUT on {self.port} did not end its reply to '{text[:40]}' with "
                                    f"'{wire.READY}' within {timeout:g} s{said} (is it running benchmark firmware "
                                    f"at {self.baudrate} baud?)", lines=list(self.last_lines))
            if not line:
                continue
            self.last_lines.append(line)
            if line == wire.READY:
                break
            lines.append(line)
        errors = [e for e in map(wire.error_text, lines) if e is not None]
        if errors:
            raise MlperfError(f"the MLPerf Tiny DUT refused '{text[:40]}': {errors[0]}", lines=lines)
        return lines

    # -- commands -----------------------------------------------------------------------------------
    def name(self) -> str:
        """`name`: the DUT's name, e.g. "unspecified"."""
        return wire.parse_name(self.request("name"))

    def profile(self) -> tuple[str, str]:
        """`profile`: (firmware, model), e.g. ("ULPMark for tinyML Firmware V0.0.1", "kws01")."""
        return wire.parse_profile(self.request("profile"))

    def load(self, data: bytes) -> None:
        """Stream one input with `db load N` and `db HEX` chunks. The DUT must confirm N, and say `m-load-done`
        on the last chunk and on no other: anything else is a wrong byte count and an error."""
        cmds = wire.db_commands(bytes(data))
        got = wire.expecting(self.request(cmds[0]))
        if got != len(data):
            raise MlperfError(f"'{cmds[0]}': the DUT expects {got} bytes, the host sends {len(data)}")
        for i, cmd in enumerate(cmds[1:], start=1):
            lines = self.request(cmd)
            done = "m-load-done" in lines
            last = i == len(cmds) - 1
            if done != last:
                sent = min(i * wire.DB_CHUNK_BYTES, len(data))
                raise MlperfError(f"wrong byte count: the DUT {'finished' if done else 'did not finish'} loading "
                                  f"after {sent} of {len(data)} bytes", lines=lines)

    def infer(self, n: int, warmup: int = 0) -> InferReply:
        """`infer N W` (both always sent: the reference's default W is 10): the timestamps and the results."""
        if n < 1 or warmup < 0:
            raise ValueError(f"infer needs N >= 1 and W >= 0, got {n} and {warmup}")
        lines = self.request(f"infer {n} {warmup}", line_timeout_s=self.infer_line_timeout_s)
        return wire.parse_infer(lines, n, warmup, energy_mode=self.energy_mode)

    def results(self) -> tuple[float, ...]:
        """`results`: the last inference's result vector again."""
        lines = [line for line in self.request("results") if line.startswith("m-results-")]
        if len(lines) != 1:
            raise MlperfError(f"'results' reply has {len(lines)} m-results lines, expected 1", lines=lines)
        return wire.parse_results(lines[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One inference on `x` (already in the DUT's input format) as the accuracy mode runs it: load, `infer 1 0`."""
        self.load(np.ascontiguousarray(x).tobytes())
        return np.asarray(self.infer(1, 0).results, dtype=np.float64)
