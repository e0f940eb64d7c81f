"""`ScopeSimulator`: a SCPI oscilloscope on a raw TCP socket (`TCPIP0::127.0.0.1::<port>::SOCKET`).

One thread accepts connections, one thread serves each connection; the acquisition state is per instance
and shared by its connections (a reconnecting driver finds its record again). Faults are injected
through `server.faults`.

With a clocked source that accepts sync hooks (`add_sync_hook`, the virtual board's timeline), the board
calls `sync()` before each command it executes: every line a client had already sent to the scope is
handled first, so a `:SINGle` written before the board's `infer` arms the scope before the inference runs
however busy the host is (on a bench the scope arms within microseconds; here its thread may be late).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from instruments.ieee488 import encode_block
from instruments.sim.acquisition import Acquisition
from instruments.sim.dialects import build_keysight, build_rigol, keysight_adc, rigol_adc
from instruments.sim.scpi import UnknownCommand
from instruments.sim.signals import SignalSource
from instruments.sim.tcp import TcpServer

#: Default identity per (dialect, ADC bits): models whose drivers expect that dialect and resolution.
DEFAULT_IDN = {
    ("rigol", 8): "RIGOL TECHNOLOGIES,DS1104Z,DS1ZA000000001,00.04.05.SP2",
    ("rigol", 12): "RIGOL TECHNOLOGIES,DHO924,DHO9A000000001,00.01.03",
    ("keysight", 8): "KEYSIGHT TECHNOLOGIES,DSOX3024T,MY00000001,07.50.2021102830",
    ("keysight", 14): "KEYSIGHT TECHNOLOGIES,HD304MSO,MY00000002,01.02.2023",
}


@dataclass
class Faults:
    """Faults to inject; change them at any time while the server runs.

    `drop_connection_after_bytes`: close the connection after sending that many bytes of the next block
    answer(s), `drops` times. `truncate_next_block`: send only half of the next block's payload and
    keep quiet. `never_trigger`: armed acquisitions never find their edge.

    By count (the bench file's `virtual.faults.scope`), numbered from 1 since the simulator started:
    acquisitions (`:SINGle`, `:DIGitize`) in `no_trigger_on` never trigger; those in `clip_on` take channel
    `clip_channel` at 1/`clip_factor` of its set vertical range; block answers in `truncate_on` are cut in
    half; during block answers in `drop_on` the connection closes after `drop_on_after_bytes`.
    """

    delay_s: float = 0.0
    drop_connection_after_bytes: int | None = None
    drops: int = 1
    truncate_next_block: bool = False
    truncate_all_blocks: bool = False
    never_trigger: bool = False
    idn_override: str | None = None
    no_trigger_on: range = range(0)
    clip_on: range = range(0)
    clip_channel: int = 1
    clip_factor: float = 4.0
    truncate_on: range = range(0)
    drop_on: range = range(0)
    drop_on_after_bytes: int = 1024


class _Block(bytes):
    """A response that is an IEEE 488.2 block (subject to the block faults)."""


class ScopeSimulator(TcpServer):
    """A Rigol- or Keysight-dialect oscilloscope fed by a `SignalSource`, served on 127.0.0.1."""

    def __init__(self, dialect: str = "rigol", source: SignalSource | None = None, adc_bits: int = 8,
                 noise_vrms: float = 0.0, host: str = "127.0.0.1", port: int = 0, *, idn: str | None = None,
                 seed: int | None = None) -> None:
        if dialect not in ("rigol", "keysight"):
            raise ValueError(f"simulator dialect must be 'rigol' or 'keysight', got {dialect!r}")
        if idn is None and (dialect, adc_bits) not in DEFAULT_IDN:
            bits = sorted(b for d, b in DEFAULT_IDN if d == dialect)
            raise ValueError(f"the {dialect} simulator emulates ADCs of {bits} bits, "
                             f"got adc_bits={adc_bits}; "
                             "pass idn= to emulate another model")
        self.dialect = dialect
        self.idn = idn or DEFAULT_IDN[(dialect, adc_bits)]
        model = self.idn.split(",")[1].strip().upper() if "," in self.idn else ""
        divisions = 12 if dialect == "rigol" and model.startswith(("DS1", "MSO1")) else 10
        adc = rigol_adc(adc_bits) if dialect == "rigol" else keysight_adc(adc_bits)
        self.acq = Acquisition(source, adc, noise_vrms=noise_vrms, divisions=divisions, seed=seed)
        self.faults = Faults()
        self._init_tcp(host, port)
        self.commands: deque[str] = deque(maxlen=10_000)  # every line received, for tests and debugging
        self.unknown: list[str] = []  # headers no handler matched
        self.errors: deque[str] = deque(maxlen=32)
        self._table = build_rigol(self) if dialect == "rigol" else build_keysight(self)
        self._local = threading.local()
        self._cond = threading.Condition()
        self._busy: dict[socket.socket, bool] = {}  # a connection's serving thread has unhandled lines
        self._hooked: object = None
        self.acquisitions = 0  # single acquisitions armed since the start
        self.blocks = 0  # waveform block answers sent since the start
        self._no_trigger = False  # the armed acquisition is one of `faults.no_trigger_on`

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def source(self) -> SignalSource | None:
        return self.acq.source

    @source.setter
    def source(self, value: SignalSource | None) -> None:
        self.acq.source = value
        if self._listener is not None:
            self._hook()

    def _on_start(self) -> None:
        self._hook()

    def _hook(self) -> None:
        src = self.acq.source
        if src is not self._hooked and callable(getattr(src, "add_sync_hook", None)):
            src.add_sync_hook(self.sync)
            self._hooked = src

    def sync(self, timeout_s: float = 2.0) -> None:
        """Return once every line already sent by a client has been handled (see the module doc)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._stop.is_set():
                pending = [c for c in list(self._conns) if self._busy.get(c) or _readable(c)]
                if not pending or time.monotonic() > deadline:
                    return
                self._cond.wait(0.002)

    @property
    def resource(self) -> str:
        """The VISA resource string of the running server."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    # ---- helpers used by the dialects -----------------------------------------------------------
    def block(self, payload: bytes) -> bytes:
        return _Block(encode_block(payload))

    def pop_error(self, none: str) -> str:
        return self.errors.popleft() if self.errors else none

    def arm(self) -> None:
        """Arm a single acquisition (`:SINGle`, `:DIGitize`) with the faults due on it."""
        f = self.faults
        with self.acq.lock:
            self.acquisitions += 1
            self._no_trigger = self.acquisitions in f.no_trigger_on
            clip = {f.clip_channel: f.clip_factor} if self.acquisitions in f.clip_on else None
            self.acq.arm(range_divisor=clip)

    def _trigger_fault(self) -> None:
        self.acq.never_trigger = self.faults.never_trigger or self._no_trigger

    def poll_state(self) -> str:
        """Advance the acquisition to now and return the Rigol-style state (WAIT, TD, RUN, STOP)."""
        with self.acq.lock:
            self._trigger_fault()
            return self.acq.advance()

    def wait_until_complete(self) -> bool:
        """Hold this connection until the armed acquisition completes; False if the client went away."""
        sock = getattr(self._local, "sock", None)
        while not self._stop.is_set():
            with self.acq.lock:
                self._trigger_fault()
                self.acq.advance()
                if not self.acq.busy():
                    return True
                end = self.acq.window_end()
                clocked = self.acq.clocked
            pause = 0.01 if end is None or clocked else min(0.01, max(end - time.monotonic(), 0.0005))
            if sock is not None and _peer_closed(sock, pause):
                return False
            if sock is None:
                time.sleep(pause)
        return False

    # ---- serving --------------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        self._local.sock = conn
        buf = bytearray()
        try:
            while not self._stop.is_set():
                r, _, _ = select.select([conn], [], [], 0.1)
                if not r:
                    continue
                self._set_busy(conn, True)
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    text = line.decode("ascii", "replace").strip()
                    if text and _is_waiting(text):
                        self._set_busy(conn, False)  # its client waits for it: nothing to sync behind it
                    if text and not self._handle(conn, text):
                        return
                self._set_busy(conn, False)
        except OSError:
            return
        finally:
            self._set_busy(conn, False)
            self._busy.pop(conn, None)
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _set_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._cond:
            self._busy[conn] = busy
            if not busy:
                self._cond.notify_all()

    def _handle(self, conn: socket.socket, line: str) -> bool:
        """Run one command; send its answer. False when the connection must end (a drop fault)."""
        self.commands.append(line)
        try:
            with self.acq.lock if not _is_waiting(line) else contextlib.nullcontext():
                response = self._table.dispatch(line)
        except UnknownCommand:
            self.unknown.append(line)
            self.errors.append(f'-113,"Undefined header; {line}"')
            return True
        except Exception as exc:  # a bad parameter must not kill the connection, as on a real scope
            self.errors.append(f'-224,"Illegal parameter value; {line}: {exc}"')
            return True
        if response is None:
            return True
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        f = self.faults
        if isinstance(response, _Block):
            with self._cond:
                self.blocks += 1
                block = self.blocks
            if block in f.drop_on:
                conn.sendall(response[: f.drop_on_after_bytes])
                return False
            if f.drop_connection_after_bytes is not None and f.drops > 0:
                f.drops -= 1
                conn.sendall(response[: f.drop_connection_after_bytes])
                return False
            if f.truncate_next_block or f.truncate_all_blocks or block in f.truncate_on:
                f.truncate_next_block = False
                header_len = 2 + int(response[1:2])
                payload_len = len(response) - header_len - 1
                conn.sendall(response[: header_len + payload_len // 2])
                return True
        conn.sendall(response)
        return True


def _is_waiting(line: str) -> bool:
    """Commands that block until an acquisition completes run without holding the state lock."""
    head = line.split(" ", 1)[0].upper()
    return head in ("*OPC?", "*WAI")


def _readable(sock: socket.socket) -> bool:
    """Bytes (or a close) are waiting on the socket."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(r)


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Wait up to `timeout` for the socket; True if the peer closed it (readable with no data)."""
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return False
    try:
        closed = sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
    if not closed:
        time.sleep(timeout)  # data is waiting behind us: keep holding without spinning
    return closed
