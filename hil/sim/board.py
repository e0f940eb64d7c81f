"""The virtual ESP32: serves the HIL device protocol (docs/protocol.md) on a pty and on a TCP socket.

The model runs in the TFLite Micro runtime (real kernels, real arena use); latency and supply current come
from the calibrated cost model, and the board really waits for each inference (times a speed factor), so
timeouts and scope captures behave as on a bench. Activity is published to an `ActivityTimeline`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import select
import socket
import threading
import time
import tty
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import HilError
from hil.protocol import CHUNK_MAX_BYTES, MAX_INFERENCE_S, MAX_LINE_BYTES, PROTOCOL_VERSION, latency_stats
from hil.sim.costmodel import Calibration, CostModel, layers_from_model, load_calibration
from hil.sim.timeline import ActivityTimeline

FIRMWARE_VERSION = "0.1.0-sim"
DEFAULT_ARENA_BYTES = 256 * 1024
BOOT_BANNER = (
    "ets Jun  8 2016 00:22:57",
    "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "I (29) boot: ESP-IDF virtual-esp32 2nd stage bootloader",
    "I (312) cpu_start: Pro cpu start user code",
)
COMMANDS = ("version", "hello", "infer", "input", "data", "run", "profile", "reset")


class _Reset(Exception):
    """An injected reset fired in the middle of a command (internal)."""


class _CmdError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Faults:
    """Fault injection for reliability tests: one-shot faults by command name, and a garbled-byte rate.

    `reset_on`/`drop_on`/`hang_on` map a command name to how many of its next executions misbehave.
    A reset fires mid-command (after the first timed inference of `infer`); a dropped reply is computed but
    never sent; a hang stops the board until `hang_s` passes or `VirtualBoard.power_cycle()`.
    `garble_rate` flips one random bit in that fraction of the bytes the board sends.
    """

    reset_on: dict[str, int] = field(default_factory=dict)
    drop_on: dict[str, int] = field(default_factory=dict)
    hang_on: dict[str, int] = field(default_factory=dict)
    hang_s: float | None = None
    garble_rate: float = 0.0

    @staticmethod
    def take(table: dict[str, int], cmd: str) -> bool:
        """Consume one pending fault for `cmd`."""
        if table.get(cmd, 0) > 0:
            table[cmd] -= 1
            return True
        return False


@dataclass
class _Model:
    """The flashed model as the firmware sees it after boot."""

    data: bytes | None
    error: str | None = None
    info: Any = None  # models.tflite_file.TfliteModel
    runtime: Any = None  # models.tflm.TflmModel
    arena_used: int | None = None
    cost: CostModel | None = None

    def tensor_json(self, t: Any) -> dict[str, Any]:
        floating = t.dtype.startswith("float")
        return {
            "shape": list(t.shape),
            "dtype": t.dtype,
            "scale": 0.0 if floating else t.scale,
            "zero_point": 0 if floating else t.zero_point,
            "bytes": t.bytes,
        }


def _load_model(data: bytes | None, arena_bytes: int, cal: Calibration, cpu_mhz: int) -> _Model:
    """Parse and allocate the model as the firmware would at boot; failures become `error`."""
    from models.errors import ModelError
    from models.tflite_file import read_model
    from models.tflm import TflmError, TflmModel, min_arena_bytes, tflm_error

    m = _Model(data)
    if not data:
        m.error = "no model image flashed; start the board with a .tflite model"
        return m
    try:
        m.info = read_model(data, source="model image")
    except ModelError as exc:
        m.error = f"model image corrupt: {exc}"
        return m
    if len(m.info.inputs) != 1 or len(m.info.outputs) != 1:
        m.error = (
            f"firmware supports one input and one output tensor, model has {len(m.info.inputs)} and "
            f"{len(m.info.outputs)}"
        )
        return m
    m.cost = CostModel.build(layers_from_model(m.info), cal, cpu_mhz)
    try:
        m.runtime = TflmModel(data, arena_bytes=arena_bytes)
        m.arena_used = m.runtime.arena_used_bytes
    except TflmError as exc:
        reason = tflm_error(data)
        if reason is None:
            m.error = f"arena too small: needs {min_arena_bytes(data)} bytes, has {arena_bytes}"
        else:
            m.error = reason
        del exc
    return m


class _LineReader:
    """Splits a byte stream into command lines; a line over the limit is discarded up to its terminator."""

    def __init__(self, limit: int = MAX_LINE_BYTES):
        self.limit = limit
        self.buf = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete lines in `data` (None stands for an over-long line)."""
        out: list[bytes | None] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl]
            if not self.discarding:
                self.buf.extend(piece)
                if len(self.buf) > self.limit + 1:  # +1: a trailing '\r' does not count
                    self.discarding = True
                    self.buf.clear()
            if nl < 0:
                return out
            line = bytes(self.buf).rstrip(b"\r")
            out.append(None if self.discarding or len(line) > self.limit else line)
            self.buf.clear()
            self.discarding = False
            start = nl + 1

    def clear(self) -> None:
        self.buf.clear()
        self.discarding = False


class _Session:
    """One host connection (the pty or a TCP client): a file descriptor or socket with a line reader."""

    def __init__(self, name: str, read: Callable[[float], bytes | None], write: Callable[[bytes], None]):
        self.name = name
        self.read = read
        self.write = write
        self.reader = _LineReader()
        self.pending: list[bytes | None] = []
        self.closed = False


class VirtualBoard:
    """A virtual ESP32 running the HIL firmware protocol over a pty and `socket://127.0.0.1:PORT`."""

    def __init__(
        self,
        model: bytes | str | Path | None,
        *,
        board: str = "virtual-esp32",
        board_id: str = "24:0a:c4:00:00:01",
        cpu_mhz: int = 240,
        arena_bytes: int = DEFAULT_ARENA_BYTES,
        marker_gpio: int = 4,
        speed: float = 1.0,
        seed: int = 0,
        boot_s: float = 0.2,
        timeline: ActivityTimeline | None = None,
        calibration: Calibration | None = None,
    ):
        if speed <= 0:
            raise HilError(f"virtual board speed factor must be > 0, got {speed}")
        self.board = board
        self.board_id = board_id
        self.cpu_mhz = cpu_mhz
        self.arena_bytes = arena_bytes
        self.marker_gpio = marker_gpio
        self.speed = speed
        self.boot_s = boot_s
        self.calibration = calibration or load_calibration()
        self.timeline = timeline or ActivityTimeline(idle_current_a=self.calibration.idle_current_a)
        self.faults = Faults()
        self.commands_served = 0
        self._rng = np.random.default_rng(seed)
        self._garble_rng = np.random.default_rng(seed + 1)
        self._exec = threading.RLock()
        self._stop = threading.Event()
        self._unhang = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sessions: list[_Session] = []
        self._pty: tuple[int, int] | None = None
        self._server: socket.socket | None = None
        self.pty_path: str | None = None
        self.port: int | None = None
        self._model = _Model(None)
        self._flash = self._read_image(model)
        self._boot_count = 0
        self._boot(announce=False)

    # -- model and state --------------------------------------------------------------------------
    @staticmethod
    def _read_image(model: bytes | str | Path | None) -> bytes | None:
        if model is None or isinstance(model, bytes | bytearray):
            return bytes(model) if model is not None else None
        p = Path(model)
        if not p.is_file():
            raise HilError(f"model file {p} not found; pass the path of a .tflite file")
        return p.read_bytes()

    def flash(self, model: bytes | str | Path | None) -> None:
        """Replace the model image and reboot, as flashing new firmware would."""
        with self._exec:
            self._flash = self._read_image(model)
            self._boot(announce=True)

    def _boot(self, *, announce: bool) -> None:
        if self._flash is not self._model.data:
            self._model = _load_model(self._flash, self.arena_bytes, self.calibration, self.cpu_mhz)
        self._input: bytes | None = None
        self._upload: dict[str, Any] | None = None
        self._boot_count += 1
        if announce:
            for line in BOOT_BANNER:
                self._broadcast(line)
            self._broadcast(f"I ({330 + self._boot_count}) hil: hil-ready protocol={PROTOCOL_VERSION}")

    @property
    def model_error(self) -> str | None:
        """Why the flashed model cannot run (as `hello` reports it), or None."""
        return self._model.error

    @property
    def cost(self) -> CostModel | None:
        """The cost model of the flashed model."""
        return self._model.cost

    # -- transports -------------------------------------------------------------------------------
    def start(self, *, pty: bool = True, tcp_port: int | None = 0) -> VirtualBoard:
        """Serve on a new pseudo-terminal (`pty_path`) and/or TCP 127.0.0.1 (`url`; port 0 = a free port)."""
        if pty:
            self._start_pty()
        if tcp_port is not None:
            self._start_tcp(tcp_port)
        return self

    @property
    def url(self) -> str | None:
        """`socket://127.0.0.1:PORT` when serving TCP."""
        return f"socket://127.0.0.1:{self.port}" if self.port is not None else None

    def _start_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no newline translation before the host configures the port
        os.set_blocking(master, False)
        self._pty = (master, slave)
        self.pty_path = os.ttyname(slave)

        def read(timeout: float) -> bytes | None:
            r, _, _ = select.select([master], [], [], timeout)
            if not r:
                return b""
            try:
                return os.read(master, 4096)
            except BlockingIOError:
                return b""
            except OSError as exc:
                return b"" if exc.errno == errno.EIO else None

        def write(data: bytes) -> None:
            view = memoryview(data)
            deadline = time.monotonic() + 1.0
            while view:
                try:
                    view = view[os.write(master, view) :]
                except BlockingIOError:  # nobody reads the port: a UART would drop the bytes too
                    if time.monotonic() > deadline or not select.select([], [master], [], 0.05)[1]:
                        if time.monotonic() > deadline:
                            return
                except OSError:
                    return

        self._spawn(_Session("pty", read, write))

    def _start_tcp(self, port: int) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(4)
        srv.settimeout(0.1)
        self._server = srv
        self.port = srv.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="vboard-accept", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._socket_session(conn))

    @staticmethod
    def _socket_session(conn: socket.socket) -> _Session:
        def read(timeout: float) -> bytes | None:
            r, _, _ = select.select([conn], [], [], timeout)
            if not r:
                return b""
            try:
                data = conn.recv(4096)
            except OSError:
                return None
            return data if data else None

        def write(data: bytes) -> None:
            try:
                conn.sendall(data)
            except OSError:
                pass

        s = _Session("tcp", read, write)
        s.conn = conn  # type: ignore[attr-defined]
        return s

    def _spawn(self, session: _Session) -> None:
        self._sessions.append(session)
        t = threading.Thread(target=self._serve, args=(session,), name=f"vboard-{session.name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop serving and close the pty and socket."""
        self._stop.set()
        self._unhang.set()
        if self._server is not None:
            self._server.close()
        for s in self._sessions:
            conn = getattr(s, "conn", None)
            if conn is not None:
                conn.close()
        for t in self._threads:
            t.join(timeout=2)
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    def __enter__(self) -> VirtualBoard:
        if not self._sessions and self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- output -----------------------------------------------------------------------------------
    def _emit(self, session: _Session, text: str) -> None:
        data = (text + "\r\n").encode("ascii", errors="replace")
        rate = self.faults.garble_rate
        if rate > 0:
            arr = np.frombuffer(data, dtype=np.uint8).copy()
            hit = self._garble_rng.random(arr.size) < rate
            if hit.any():
                bits = self._garble_rng.integers(0, 8, size=int(hit.sum()))
                arr[hit] ^= (1 << bits).astype(np.uint8)
                data = arr.tobytes()
        session.write(data)

    def _broadcast(self, text: str) -> None:
        for s in list(self._sessions):
            if not s.closed:
                self._emit(s, text)

    def _reply(self, session: _Session, obj: dict[str, Any]) -> None:
        self._emit(session, "@hil " + json.dumps(obj, separators=(",", ":")))

    # -- serving ----------------------------------------------------------------------------------
    def _serve(self, session: _Session) -> None:
        while not self._stop.is_set():
            if not session.pending:
                data = session.read(0.1)
                if data is None:
                    session.closed = True
                    return
                if not data:
                    continue
                session.pending.extend(session.reader.feed(data))
                continue
            line = session.pending.pop(0)
            with self._exec:
                self._handle(session, line)

    def _handle(self, session: _Session, line: bytes | None) -> None:
        if line is None:
            self._reply(
                session,
                {
                    "ok": False,
                    "cmd": "?",
                    "code": "E_LINE_TOO_LONG",
                    "error": f"command line longer than {MAX_LINE_BYTES} bytes",
                },
            )
            return
        text = line.decode("latin-1").strip()
        if not text:
            return  # an empty line is not a command
        tokens = text.split(" ")
        cmd, args = tokens[0], tokens[1:]
        self.commands_served += 1
        if Faults.take(self.faults.hang_on, cmd):
            self._hang()
            return
        reset_now = Faults.take(self.faults.reset_on, cmd)
        try:
            reply = self._dispatch(cmd, args, reset_now)
        except _Reset:
            self._reboot(session)
            return
        except _CmdError as exc:
            reply = {"ok": False, "cmd": cmd, "code": exc.code, "error": str(exc)}
        if reset_now:  # commands without a natural midpoint reset before their reply
            self._reboot(session)
            return
        if Faults.take(self.faults.drop_on, cmd):
            return
        if cmd == "infer" and reply.get("ok"):  # the firmware logs each benchmark, as ESP-IDF apps do
            self._emit(
                session,
                f"I ({int(time.monotonic() * 1000) % 10_000_000}) hil: infer n={reply['n']} "
                f"warmup={reply['warmup']} mean_us={reply['mean_us']}",
            )
        self._reply(session, reply)
        if cmd == "reset" and reply.get("ok"):
            self._reboot(session)

    def _hang(self) -> None:
        self._unhang.clear()
        self._unhang.wait(self.faults.hang_s)
        for s in self._sessions:  # input sent to a hung board is lost
            s.pending.clear()
            s.reader.clear()

    def power_cycle(self) -> None:
        """Cut and restore power: ends a hang, reboots (prints `hil-ready`)."""
        self._unhang.set()
        with self._exec:
            self.timeline.cut(time.monotonic())
            self._boot(announce=True)

    def _reboot(self, session: _Session) -> None:
        self.timeline.cut(time.monotonic())
        time.sleep(self.boot_s)
        while session.read(0.0):  # bytes received while booting are lost
            pass
        for s in self._sessions:
            s.pending.clear()
            s.reader.clear()
        self._boot(announce=True)

    # -- commands ---------------------------------------------------------------------------------
    def _dispatch(self, cmd: str, args: list[str], reset_now: bool) -> dict[str, Any]:
        if cmd not in COMMANDS:
            raise _CmdError("E_UNKNOWN_CMD", f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
        if cmd == "version":
            self._nargs(args, 0, 0)
            return {
                "ok": True,
                "cmd": "version",
                "protocol": PROTOCOL_VERSION,
                "firmware": FIRMWARE_VERSION,
                "board": self.board,
            }
        if cmd == "hello":
            self._nargs(args, 0, 0)
            return self._hello()
        if cmd == "reset":
            self._nargs(args, 0, 0)
            return {"ok": True, "cmd": "reset"}
        if cmd == "input":
            return self._cmd_input(args)
        if cmd == "data":
            return self._cmd_data(args)
        if cmd == "infer":
            return self._cmd_infer(args, reset_now)
        if cmd == "run":
            self._nargs(args, 0, 0)
            return self._cmd_run()
        self._nargs(args, 0, 0)
        return self._cmd_profile()

    @staticmethod
    def _nargs(args: list[str], lo: int, hi: int) -> None:
        if not lo <= len(args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise _CmdError("E_ARGS", f"expected {want} arguments, got {len(args)}")

    @staticmethod
    def _int(arg: str, name: str, lo: int, hi: int) -> int:
        if not arg.isdigit() or not lo <= int(arg) <= hi:
            raise _CmdError("E_ARGS", f"{name} must be a decimal integer in {lo}..{hi}, got {arg[:20]!r}")
        return int(arg)

    def _require_model(self) -> _Model:
        if self._model.error is not None or self._model.runtime is None:
            raise _CmdError("E_MODEL", self._model.error or "no model")
        return self._model

    def _hello(self) -> dict[str, Any]:
        m = self._model
        reply: dict[str, Any] = {
            "ok": m.error is None,
            "cmd": "hello",
            "protocol": PROTOCOL_VERSION,
            "firmware": FIRMWARE_VERSION,
            "board": self.board,
            "board_id": self.board_id,
            "simulated": True,
            "cpu_mhz": self.cpu_mhz,
            "marker_gpio": self.marker_gpio,
        }
        if m.data:
            reply["model"] = {
                "crc32": f"{zlib.crc32(m.data) & 0xFFFFFFFF:08x}",
                "sha256": hashlib.sha256(m.data).hexdigest(),
                "bytes": len(m.data),
            }
        reply["arena"] = {"configured": self.arena_bytes, "used": m.arena_used}
        if m.info is not None and m.info.inputs and m.info.outputs:
            reply["input"] = m.tensor_json(m.info.inputs[0])
            reply["output"] = m.tensor_json(m.info.outputs[0])
            reply["ops"] = m.info.ops
        if m.error is not None:
            reply.update(code="E_MODEL", error=m.error)
        return reply

    def _cmd_input(self, args: list[str]) -> dict[str, Any]:
        self._nargs(args, 2, 2)
        m = self._require_model()
        need = m.info.inputs[0].bytes
        length = self._int(args[0], "LEN", 0, 1 << 30)
        crc = args[1].lower()
        if len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
            raise _CmdError("E_ARGS", f"CRC32 must be 8 hex digits, got {args[1][:20]!r}")
        self._upload = None
        if length != need:
            raise _CmdError("E_LENGTH", f"input tensor is {need} bytes, not {length}")
        self._upload = {"bytes": length, "crc32": crc, "buf": bytearray()}
        return {"ok": True, "cmd": "input", "bytes": length, "chunk_max": CHUNK_MAX_BYTES}

    def _cmd_data(self, args: list[str]) -> dict[str, Any]:
        up = self._upload
        if up is None:
            raise _CmdError("E_STATE", "data without a pending input; send 'input LEN CRC32' first")
        self._nargs(args, 1, 1)
        try:
            chunk = base64.b64decode(args[0].encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            self._upload = None
            raise _CmdError("E_BASE64", "data chunk is not valid base64; upload discarded") from None
        if len(chunk) > CHUNK_MAX_BYTES or len(up["buf"]) + len(chunk) > up["bytes"]:
            self._upload = None
            raise _CmdError(
                "E_LENGTH",
                f"chunks exceed the announced {up['bytes']} bytes (or {CHUNK_MAX_BYTES} "
                "per chunk); upload discarded",
            )
        up["buf"].extend(chunk)
        reply: dict[str, Any] = {"ok": True, "cmd": "data", "received": len(up["buf"]), "bytes": up["bytes"]}
        if len(up["buf"]) == up["bytes"]:
            got = f"{zlib.crc32(bytes(up['buf'])) & 0xFFFFFFFF:08x}"
            self._upload = None
            if got != up["crc32"]:
                raise _CmdError("E_CRC", f"upload CRC32 is {got}, announced {up['crc32']}; upload discarded")
            self._input = bytes(up["buf"])
            reply.update(complete=True, crc32=got)
        return reply

    def _input_array(self, m: _Model, data: bytes | None) -> np.ndarray:
        t = m.info.inputs[0]
        dtype = np.dtype(t.dtype)
        if data is None:
            return np.zeros(t.shape, dtype)
        return np.frombuffer(data, dtype=dtype).reshape(t.shape)

    def _invoke(self, m: _Model, data: bytes | None) -> np.ndarray:
        from models.tflm import TflmError

        try:
            return m.runtime.invoke(self._input_array(m, data))
        except TflmError as exc:
            raise _CmdError("E_INVOKE", str(exc)) from None

    def _durations(self, m: _Model) -> np.ndarray:
        """Per-op modelled durations (s) of one inference, with jitter; index 0 is the invoke overhead."""
        assert m.cost is not None
        base = np.array((m.cost.invoke_overhead_s, *m.cost.op_seconds))
        jitter = 1.0 + self._rng.normal(0.0, m.cost.jitter_rel_std, size=base.size)
        return base * np.clip(jitter, 0.9, 1.1)

    def _cycles_us(self, seconds: float) -> int:
        cycles = int(round(seconds * self.cpu_mhz * 1e6))
        return cycles // self.cpu_mhz

    def _one_inference(
        self, m: _Model, start: float, *, marker: bool, work: Callable[[], Any] | None = None
    ) -> tuple[float, float]:
        """Run one modelled Invoke() from `start` (wall clock); return (modelled seconds, wall end).

        `work` (the real TFLM invoke) runs inside the modelled window, so it does not add to its duration.
        """
        assert m.cost is not None
        seconds = float(self._durations(m).sum())
        if seconds > MAX_INFERENCE_S:
            raise _CmdError(
                "E_INVOKE", f"inference took {seconds:.1f} s, over the {MAX_INFERENCE_S:.0f} s limit"
            )
        start = max(start, time.monotonic())
        end = start + seconds * self.speed
        self.timeline.active(start, end, m.cost.active_current_a, marker=marker)
        if work is not None:
            try:
                work()
            except _CmdError:
                self.timeline.cut(time.monotonic())
                raise
        _sleep_until(end)
        return seconds, end

    def _cmd_infer(self, args: list[str], reset_now: bool) -> dict[str, Any]:
        self._nargs(args, 1, 3)
        n = self._int(args[0], "N", 1, 1000)
        w = self._int(args[1], "W", 0, 100) if len(args) > 1 else 0
        gap = self._int(args[2], "GAP_MS", 0, 1000) if len(args) > 2 else 0
        m = self._require_model()
        self._invoke(m, self._input)  # the real kernels once: an invalid model or input fails here
        t = time.monotonic()
        for _ in range(w):
            _, t = self._one_inference(m, t, marker=False)
        lat: list[int] = []
        for i in range(n):
            seconds, t = self._one_inference(m, t, marker=True)
            lat.append(self._cycles_us(seconds))
            if reset_now and i == 0:
                raise _Reset()
            if gap:
                t += gap / 1000.0 * self.speed
                _sleep_until(t)
        return {
            "ok": True,
            "cmd": "infer",
            "n": n,
            "warmup": w,
            "gap_ms": gap,
            "latency_us": lat,
            **latency_stats(lat),
            "cpu_mhz": self.cpu_mhz,
        }

    def _cmd_run(self) -> dict[str, Any]:
        m = self._require_model()
        if self._input is None:
            raise _CmdError("E_STATE", "run without a loaded input; upload one with 'input' and 'data'")
        result: list[np.ndarray] = []
        seconds, _ = self._one_inference(
            m, time.monotonic(), marker=True, work=lambda: result.append(self._invoke(m, self._input))
        )
        raw = np.ascontiguousarray(result[0]).tobytes()
        return {
            "ok": True,
            "cmd": "run",
            "latency_us": self._cycles_us(seconds),
            "output": base64.b64encode(raw).decode("ascii"),
            "output_crc32": f"{zlib.crc32(raw) & 0xFFFFFFFF:08x}",
            "dtype": m.info.outputs[0].dtype,
        }

    def _cmd_profile(self) -> dict[str, Any]:
        m = self._require_model()
        assert m.cost is not None
        self._invoke(m, self._input)
        durations = self._durations(m)
        start = time.monotonic()
        end = start + float(durations.sum()) * self.speed
        self.timeline.active(start, end, m.cost.active_current_a, marker=True)
        _sleep_until(end)
        ops = [
            {"index": i, "op": layer.op, "us": self._cycles_us(float(d))}
            for i, (layer, d) in enumerate(zip(m.cost.layers, durations[1:], strict=True))
        ]
        return {"ok": True, "cmd": "profile", "ops": ops, "total_us": self._cycles_us(float(durations.sum()))}


def _sleep_until(deadline: float) -> None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(remaining)
