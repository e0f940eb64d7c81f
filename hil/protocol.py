"""Host client of the HIL device protocol (docs/protocol.md, versions 1 and 2) over any pyserial port or URL.

One command per line, one `@hil {json}` reply per command; other lines are device log. The client speaks the
version the device announces in `hello`: with version 2 every line carries a CRC32 both ways and a reply
without a valid one is garbage. It resynchronises after garbage, a timeout or a board reset (`sync`, or
`hello` with a version 1 device) and re-issues the command. The protocol's
constants, reply types and line formats live in `hil.wire` (shared with the virtual board); they are
re-exported here so `from hil.protocol import ...` keeps working.
"""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from hil.errors import HilError
from hil.wire import (
    CHUNK_MAX_BYTES,
    DEVICE_DEADLINE_S,
    E_MODEL,
    E_STATE,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    READY_MARK,
    SUPPORTED_PROTOCOLS,
    UPLOAD_ERRORS,
    Hello,
    InferResult,
    ModelId,
    OpTime,
    Profile,
    RunResult,
    TensorSpec,
    Version,
    crc32_hex,
    fatal_reason,
    latency_stats,
    looks_like_reply,
    parse_reply,
    reply_deadline_s,
    sign_command,
)

T = TypeVar("T")
GARBAGE_RETRIES_V2 = 5  # re-issues after replies that failed their CRC (transient link noise), version 2
SYNC_TRIES = 4  # `sync` requests per resynchronisation (each reply is ~50 bytes)
HELLO_TRIES = 10  # `hello` requests after garbage (its reply is ~700 bytes; a silent board fails after two)
UPLOAD_TRIES_V2 = 5  # whole uploads (~1.4 KB each) per input when replies are lost to link noise, version 2
LINK_LOST = "LINK_LOST"  # host-side code: a command that must not be re-issued was lost; the link is resynced
FATAL = "FATAL"  # host-side code: the board stopped (`hil-fatal`) or restarted after a crash


class DutError(HilError):
    """The device answered with an error, or the link failed; carries the last lines seen."""

    def __init__(self, message: str, *, code: str | None = None, lines: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.lines = list(lines or [])

    def __str__(self) -> str:
        base = super().__str__()
        if not self.lines:
            return base
        return f"{base} (last lines: {' | '.join(self.lines[-5:])})"


class DutTimeout(DutError):
    """The device did not reply within the protocol's deadline plus the transport margin."""


class DutFatal(DutError):
    """The board stopped for good (`hil-fatal`: out of memory, abort, a fault) or restarted after a crash:
    never retried, and nothing of the command it was running is a figure."""


class _Garbage(Exception):
    """A reply-like line that is not a valid reply to anything this client sent (internal)."""


class _BoardReset(Exception):
    """A `hil-ready` line arrived while waiting for a reply (internal)."""


class DutClient:
    """A device under test speaking the HIL protocol on a serial port, pty path or pyserial URL.

    `open()` flushes input and handshakes (`hello`); `hello_info` then holds the device description,
    `hello_reply` the raw reply object it was read from and `protocol` the version spoken from then on.
    `resyncs` counts resynchronisations and `garbage` the reply-like lines that were refused (a CRC that
    does not match, a malformed reply), so a noisy link shows in the figures' provenance.
    """

    def __init__(
        self,
        port: str | Any,
        *,
        baudrate: int = 115200,
        margin_s: float = 1.0,
        on_log: Callable[[str], None] | None = None,
        history: int = 50,
    ):
        self.port = port
        self.baudrate = baudrate
        self.margin_s = margin_s
        self.on_log = on_log
        self.log: list[str] = []
        self.last_lines: collections.deque[str] = collections.deque(maxlen=history)
        self.hello_info: Hello | None = None
        self.hello_reply: dict[str, Any] | None = None
        self.resyncs = 0
        self.garbage = 0
        self.protocol: int | None = None  # negotiated by the first hello
        self.last_latency_s: float | None = None
        self._sync_token = 0
        self._ser: Any = None
        self._buf = bytearray()
        self._sent: set[str] = set()

    # -- connection -------------------------------------------------------------------------------
    def open(self) -> DutClient:
        """Open the port, discard pending input and handshake; refuse a protocol other than 1."""
        import serial

        if isinstance(self.port, str):
            try:
                # pyserial's RFC 2217 client (a lab place's port through ser2net) has no write timeout
                extra = {} if self.port.startswith("rfc2217://") else {"write_timeout": 5}
                self._ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.02, **extra)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise DutError(
                    f"cannot open serial port {self.port}: {exc}; check the port in bench.yaml"
                ) from None
        else:
            self._ser = self.port
        self._ser.reset_input_buffer()
        self._buf.clear()
        self._write(b"\n")  # ends a partial line a previous session may have left; the device ignores it
        self.handshake()
        return self

    def close(self) -> None:
        """Close the port (only when this client opened it)."""
        if self._ser is not None and isinstance(self.port, str):
            self._ser.close()
        self._ser = None

    def __enter__(self) -> DutClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- line I/O ---------------------------------------------------------------------------------
    def _note(self, line: str, *, is_log: bool) -> None:
        self.last_lines.append(line)
        if is_log:
            self.log.append(line)
            if self.on_log is not None:
                self.on_log(line)

    def _readline(self, deadline: float) -> str | None:
        """The next line from the device, or None at the deadline."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return raw.rstrip(b"\r").decode("utf-8", errors="replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                waiting = self._ser.in_waiting
                chunk = self._ser.read(waiting or 1)
            except Exception as exc:  # serial.SerialException, OSError: the port went away
                raise DutError(
                    f"serial port {self.port} failed: {exc}", lines=list(self.last_lines)
                ) from None
            if chunk:
                self._buf.extend(chunk)

    def _send(self, line: str) -> None:
        data = (sign_command(line) if self._crc_required else line).encode("ascii") + b"\n"
        if len(data) - 1 > MAX_LINE_BYTES:
            raise DutError(
                f"command line of {len(data) - 1} bytes exceeds the protocol limit of {MAX_LINE_BYTES}"
            )
        self._sent.add(line.split(" ", 1)[0])
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except Exception as exc:
            raise DutError(
                f"cannot write to serial port {self.port}: {exc}", lines=list(self.last_lines)
            ) from None

    def _await_reply(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the reply to command `name`; skip stale replies, log other lines."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._readline(deadline)
            if line is None:
                raise DutTimeout(
                    f"no reply to '{name}' within {timeout_s:.1f} s at {self.baudrate} baud; is the board "
                    "running the HIL firmware, the port right and the baud the board's?",
                    lines=list(self.last_lines),
                )
            reply = parse_reply(line, require_crc=self._crc_required)
            if reply is None:
                fatal = fatal_reason(line)
                if fatal is not None:
                    self._note(line, is_log=True)
                    raise DutFatal(f"the board on {self.port} stopped during '{name}': {fatal}",
                                   code=FATAL, lines=list(self.last_lines))
                if READY_MARK in line:
                    self._note(line, is_log=True)
                    raise _BoardReset(line)
                if looks_like_reply(line):
                    self._note(line, is_log=True)
                    self.garbage += 1
                    raise _Garbage(line)
                self._note(line, is_log=True)
                continue
            self._note(line, is_log=False)
            if reply["cmd"] == name:
                return reply
            if reply["cmd"] in self._sent and reply["cmd"] != "?":
                continue  # a late reply to an earlier command: stale
            self.garbage += 1
            raise _Garbage(line)  # `?` or a command we never sent: our line was corrupted on the way

    @property
    def _crc_required(self) -> bool:
        return self.protocol is not None and self.protocol >= 2

    def _exchange(self, line: str, timeout_s: float) -> dict[str, Any]:
        self._send(line)
        return self._await_reply(line.split(" ", 1)[0], timeout_s)

    def _drain(self, quiet_s: float = 0.05) -> None:
        """Read and log whatever the device still sends, until it is quiet."""
        while True:
            line = self._readline(time.monotonic() + quiet_s)
            if line is None:
                self._buf.clear()
                return
            self._note(line, is_log=parse_reply(line, require_crc=self._crc_required) is None)

    # -- requests ---------------------------------------------------------------------------------
    def handshake(self) -> Hello:
        """Send `hello` (again after garbage, a timeout or a reset) and adopt the device's protocol version."""
        if self._ser is None:
            raise DutError("DutClient is not open; call open() or use it as a context manager")
        tries = HELLO_TRIES if self.protocol is None or self.protocol >= 2 else 2
        for attempt in range(tries):
            try:
                return self._accept_hello(self._exchange("hello", DEVICE_DEADLINE_S + self.margin_s))
            except (_Garbage, _BoardReset, DutTimeout) as exc:
                if attempt == tries - 1 or (isinstance(exc, DutTimeout) and attempt >= 1):
                    raise self._failure("hello", exc) from None
                self._drain()
        raise AssertionError("unreachable")

    def _accept_hello(self, reply: dict[str, Any]) -> Hello:
        proto = reply.get("protocol")
        if not isinstance(proto, int) or isinstance(proto, bool):
            raise _Garbage(f"hello reply without an integer protocol: {proto!r}")
        if proto not in SUPPORTED_PROTOCOLS:
            raise DutError(
                f"device on {self.port} speaks protocol {proto}, this host speaks "
                f"{' and '.join(map(str, SUPPORTED_PROTOCOLS))}; flash firmware of a matching version "
                "or upgrade this package",
                lines=list(self.last_lines),
            )
        if not reply.get("ok") and reply.get("code") != E_MODEL:
            raise DutError(
                f"hello failed: {reply.get('error')}", code=reply.get("code"), lines=list(self.last_lines)
            )
        try:
            self.hello_info = Hello.from_json(reply)
            self.hello_reply = reply
        except (KeyError, TypeError, ValueError) as exc:
            raise _Garbage(f"hello reply lacks or garbles {exc}") from None
        self.protocol = proto
        return self.hello_info

    def _resync(self) -> None:
        """Get back in step with the device: `sync` with a fresh token (version 2), or `hello` (version 1)."""
        self.resyncs += 1
        self._drain()
        if not self._crc_required:
            self._accept_hello(self._exchange("hello", DEVICE_DEADLINE_S + self.margin_s))
            return
        for attempt in range(SYNC_TRIES):
            self._sync_token = (self._sync_token + 1) % 2**32
            token = self._sync_token
            try:
                self._send(f"sync {token}")
                deadline = time.monotonic() + DEVICE_DEADLINE_S + self.margin_s
                while True:  # a reply to an earlier `sync` is stale: wait for this token
                    reply = self._await_reply("sync", max(0.0, deadline - time.monotonic()))
                    if reply.get("ok") and reply.get("token") == token:
                        return
            except (_Garbage, _BoardReset, DutTimeout) as exc:
                # a silent board on a clean link is hung: fail at once; on a noisy link a reply whose line
                # break was corrupted also ends in a timeout, so there it is tried again
                if attempt == SYNC_TRIES - 1 or (isinstance(exc, DutTimeout) and not self.garbage):
                    raise exc
                self._drain()

    def _failure(self, line: str, exc: Exception) -> DutError:
        what = line[:40]
        noise = (
            f"; {self.garbage} corrupted replies in this session: the serial link is corrupting bytes (check "
            "the cable, its length and grounding, and the baud rate)"
            if self.garbage >= 2
            else ""
        )
        if isinstance(exc, DutTimeout):
            return DutTimeout(
                f"'{what}' failed after resynchronisation: {exc.args[0]}{noise}", lines=list(self.last_lines)
            )
        return DutError(
            f"'{what}' failed after resynchronisation: unreadable reply {str(exc)[:80]!r}{noise}",
            lines=list(self.last_lines),
        )

    def request(
        self,
        line: str,
        timeout_s: float | None = None,
        parse: Callable[[dict[str, Any]], T] | None = None,
        *,
        reissue: bool = True,
    ) -> Any:
        """Send one command line and return its reply (or `parse(reply)`); raise DutError on an error reply.

        A reply that `parse` cannot read (KeyError/TypeError/ValueError) counts as garbage. After garbage, a
        timeout or a board reset the client resynchronises and re-issues the line. With `reissue=False` (a
        command that must not run twice, e.g. a `data` chunk the board may already have taken) it resynchronises
        and raises DutError with code LINK_LOST instead.
        """
        if self._ser is None:
            raise DutError("DutClient is not open; call open() or use it as a context manager")
        if timeout_s is None:
            timeout_s = reply_deadline_s(line, self.last_latency_s) + self.margin_s
        timeouts = 0
        attempt = 0
        while True:
            try:
                if attempt:
                    self._resync()
                reply = self._exchange(line, timeout_s)
                if not reply["ok"]:
                    raise DutError(
                        f"device error {reply.get('code')} on '{line[:40]}': {reply.get('error')}",
                        code=reply.get("code"),
                        lines=list(self.last_lines),
                    )
                if parse is None:
                    return reply
                try:
                    return parse(reply)
                except (KeyError, TypeError, ValueError) as exc:
                    self.garbage += 1
                    raise _Garbage(f"{line.split(' ', 1)[0]} reply lacks or garbles {exc}") from None
            except (_Garbage, _BoardReset, DutTimeout) as exc:
                timeouts += isinstance(exc, DutTimeout)
                # version 2 replies are CRC-checked, so garbage is link noise worth a few more tries; a
                # timeout, a reset or any failure on a version 1 link gets one re-issue
                retries = GARBAGE_RETRIES_V2 if self._crc_required and isinstance(exc, _Garbage) else 1
                if attempt >= retries or timeouts > 1:
                    raise self._failure(line, exc) from None
                if not reissue:
                    try:
                        self._resync()
                    except (_Garbage, _BoardReset, DutTimeout) as again:
                        raise self._failure(line, again) from None
                    raise DutError(f"'{line[:40]}' was lost on the link and is not re-issued",
                                   code=LINK_LOST, lines=list(self.last_lines)) from None
                attempt += 1

    def version(self) -> Version:
        """Cheap liveness check."""

        def parse(r: dict[str, Any]) -> Version:
            if r["protocol"] != self.protocol:
                raise ValueError(f"protocol {r['protocol']!r} after hello said {self.protocol}")
            return Version(int(r["protocol"]), str(r["firmware"]), str(r["board"]))

        return self.request("version", parse=parse)

    def hello(self) -> Hello:
        """Re-read the device description (model, arena, tensors)."""
        return self.handshake()

    def require_model(self) -> Hello:
        """The hello info, raising DutError when the device has no usable model."""
        info = self.hello_info or self.hello()
        if not info.model_ok:
            raise DutError(
                f"device on {self.port} has no usable model: {info.model_error}",
                code=info.model_error_code,
                lines=list(self.last_lines),
            )
        return info

    def infer(self, n: int, warmup: int = 0, gap_ms: int = 0) -> InferResult:
        """`n` timed inferences after `warmup` untimed ones, with `gap_ms` idle after each timed one.

        A reply echoing other arguments is a late reply to another `infer` (garbage: resync, re-issue); a reply
        that is inconsistent in itself (hil.wire.infer_reply_problem) is returned with `problem` set, for the
        caller to void the trial with that reason.
        """

        def parse(r: dict[str, Any]) -> InferResult:
            for key, sent in (("n", n), ("warmup", warmup), ("gap_ms", gap_ms)):
                echo = r.get(key)
                if isinstance(echo, int) and not isinstance(echo, bool) and echo != sent:
                    raise ValueError(f"echo {key}={echo} for {sent}")
            return InferResult.from_reply(r)

        result: InferResult = self.request(f"infer {n} {warmup} {gap_ms}", parse=parse)
        if result.problem is None:  # an inconsistent reply's latencies size no deadline
            self.last_latency_s = max(result.latency_us) / 1e6
        return result

    def upload(self, data: bytes) -> str:
        """Load one input tensor (`input` + `data` chunks); retry the whole upload once if it is lost."""
        crc = crc32_hex(data)

        def done(r: dict[str, Any]) -> bool:
            if r.get("complete") and r.get("crc32") != crc:
                raise ValueError(f"completion CRC {r.get('crc32')!r}")
            return bool(r.get("complete"))

        tries = UPLOAD_TRIES_V2 if self._crc_required else 2
        for attempt in range(tries):
            try:
                self.request(f"input {len(data)} {crc}")
                complete = False
                for off in range(0, len(data), CHUNK_MAX_BYTES):
                    chunk = base64.b64encode(data[off : off + CHUNK_MAX_BYTES]).decode("ascii")
                    # a chunk is never re-issued: the board may have taken it, and a second copy would overrun
                    complete = self.request(f"data {chunk}", parse=done, reissue=False)
                if not complete:
                    raise DutError(
                        f"upload of {len(data)} bytes did not complete",
                        code="E_STATE",
                        lines=list(self.last_lines),
                    )
                return crc
            except DutError as exc:
                restart = exc.code in UPLOAD_ERRORS or exc.code == LINK_LOST
                if attempt == tries - 1 or not restart or isinstance(exc, DutTimeout):
                    raise
        raise AssertionError("unreachable")

    def run(self) -> RunResult:
        """One inference on the uploaded input; an output failing its CRC is garbage (resync, retry)."""

        def parse(r: dict[str, Any]) -> RunResult:
            out = base64.b64decode(r["output"], validate=True)
            if crc32_hex(out) != r["output_crc32"]:
                raise ValueError("output CRC mismatch")
            return RunResult(int(r["latency_us"]), out, str(r["output_crc32"]), str(r["dtype"]))

        result: RunResult = self.request("run", parse=parse)
        self.last_latency_s = result.latency_us / 1e6
        return result

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Upload `x` (already in the input dtype) and return the device's output tensor."""
        info = self.require_model()
        assert info.input is not None and info.output is not None
        arr = np.ascontiguousarray(x, dtype=np.dtype(info.input.dtype))
        if arr.nbytes != info.input.bytes:
            raise DutError(
                f"input of {arr.nbytes} bytes does not match the model input "
                f"{list(info.input.shape)} {info.input.dtype} ({info.input.bytes} bytes)"
            )
        for attempt in range(2):
            self.upload(arr.tobytes())
            resyncs = self.resyncs
            try:
                return self.run().array(info.output)
            except DutError as exc:  # E_STATE after a resync: the board reset and forgot the input; once more
                if attempt == 1 or exc.code != E_STATE or self.resyncs == resyncs:
                    raise
        raise AssertionError("unreachable")

    def profile(self) -> Profile:
        """Per-operator time of one inference."""

        def parse(r: dict[str, Any]) -> Profile:
            ops = tuple(OpTime(int(o["index"]), str(o["op"]), int(o["us"])) for o in r["ops"])
            return Profile(ops, int(r["total_us"]))

        result: Profile = self.request("profile", parse=parse)
        self.last_latency_s = result.total_us / 1e6
        return result

    def reset(self, boot_timeout_s: float = 5.0) -> Hello:
        """Restart the device, wait for its `hil-ready` line and handshake again."""
        self.request("reset")
        deadline = time.monotonic() + boot_timeout_s
        while True:
            line = self._readline(deadline)
            if line is None:
                raise DutTimeout(
                    f"no '{READY_MARK}' within {boot_timeout_s:.0f} s after reset",
                    lines=list(self.last_lines),
                )
            self._note(line, is_log=True)
            if READY_MARK in line:
                break
        return self.handshake()


__all__ = [
    "CHUNK_MAX_BYTES",
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "SUPPORTED_PROTOCOLS",
    "LINK_LOST",
    "DutClient",
    "DutError",
    "DutFatal",
    "DutTimeout",
    "FATAL",
    "Hello",
    "InferResult",
    "ModelId",
    "OpTime",
    "Profile",
    "RunResult",
    "TensorSpec",
    "Version",
    "crc32_hex",
    "latency_stats",
    "parse_reply",
    "reply_deadline_s",
]
