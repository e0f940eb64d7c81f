"""A host client for MLPerf Tiny (EEMBC EnergyRunner) benchmark firmware over a serial port (pyserial URL).

It sends one command at a time and reads lines until `m-ready`, as the reference runner does, but checks what
the runner lets pass: an `e-[...]` error, a `db load` whose byte count the DUT does not confirm, an `infer`
reply out of order or without its timestamps, a malformed `m-results`. Each is one MlperfError naming the
command and the line; a DUT that never says `m-ready` is an MlperfTimeout.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

import numpy as np

from hil.dut import mlperf_wire as wire
from hil.dut.mlperf_wire import InferReply, MlperfError

HELLO_PROTOCOL = 0  # MlperfDut.hello_info.protocol: not a version of our protocol, whose versions start at 1
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


class MlperfDut:
    """An MLPerf Tiny DUT seen the way the campaign sees a board (`hil.protocol.DutClient`'s members it uses):
    `hello_info`, `require_model`, `infer`, `predict`, and the link counters.

    What the DUT does not report stays unreported: no arena, no model checksum, and no per-inference latencies,
    only the mean over each timestamp window (so `per_inference_latency` is False). The tensors' formats come
    from the model the host flashed, which the MLPerf DUT runs as its benchmark.
    """

    per_inference_latency = False
    resyncs = 0  # the protocol has no resynchronisation
    garbage = 0

    def __init__(self, client: MlperfTinyClient, model: bytes, *, simulated: bool):
        from hil.wire import Hello, TensorSpec
        from models.tflite_file import read_model

        self.client = client
        info = read_model(model, source="model")
        tensors = [TensorSpec.of(t.shape, t.dtype, t.scale, t.zero_point, t.bytes)
                   for t in (info.inputs[0], info.outputs[0])]
        firmware, kind = client.profile()
        self.kind = kind
        self.hello_info = Hello(protocol=HELLO_PROTOCOL, firmware=firmware, board=f"mlperf-tiny {kind}",
                                board_id=client.name(), simulated=simulated, cpu_mhz=0, marker_gpio=-1, model=None,
                                arena_configured=None, arena_used=None, input=tensors[0], output=tensors[1], ops=())
        self.hello_reply = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> MlperfDut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def require_model(self):
        return self.hello_info

    def infer(self, n: int, warmup: int = 0, gap_ms: int = 0):
        """`infer N W` as an InferResult holding the window's mean only (no per-inference list); an MLPerf DUT
        runs its inferences back to back, so a gap cannot be asked for."""
        from hil.wire import InferResult

        if gap_ms:
            raise MlperfError("an MLPerf Tiny DUT runs its inferences back to back: it cannot leave gaps between "
                              "them (gap_ms must be 0)")
        reply = self.client.infer(n, warmup)
        mean = reply.latency_us
        if mean is None:
            raise MlperfError("the MLPerf Tiny DUT is in energy mode: its latency is not on the serial line")
        return InferResult(n, warmup, 0, (), mean, int(mean), int(math.ceil(mean)), math.nan, 0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The DUT's output for `x` (the model's input tensor, quantized), back in the output tensor's type: the
        DUT prints dequantized results with 3 decimals, which recovers an int8 softmax exactly (scale 1/256)."""
        spec_in, spec_out = self.hello_info.input, self.hello_info.output
        if self.kind == "ad01":
            raise MlperfError("an ad01 DUT reports its reconstruction error, not its output tensor: its outputs "
                              "cannot be compared with the host's")
        data = np.ascontiguousarray(x, dtype=np.dtype(spec_in.dtype))
        if self.kind in ("vww01", "ic01"):  # the benchmark's wire format: uint8 RGB, the DUT subtracts 128
            data = (data.astype(np.int16) + 128).astype(np.uint8)
        values = self.client.predict(data)
        out_dtype = np.dtype(spec_out.dtype)
        if out_dtype.kind == "f":
            return values.astype(out_dtype).reshape(spec_out.shape)
        info = np.iinfo(out_dtype)
        q = np.clip(np.round(values / spec_out.scale + spec_out.zero_point), info.min, info.max)
        return q.astype(out_dtype).reshape(spec_out.shape)
