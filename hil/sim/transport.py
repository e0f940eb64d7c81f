"""The virtual board's serial side: a line server on a pseudo-terminal and on TCP, with fault injection.

One thread serves the pty, the TCP listener and every TCP connection through one selector, as a single
UART would: it splits the bytes into command lines and hands each one to the board, which answers
before the next is read. `Faults` holds the injected faults; the byte-stream one (garbled bits) is
applied here, the command ones by the board (`hil.sim.board`).
"""

from __future__ import annotations

import collections
import os
import select
import selectors
import socket
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hil.wire import MAX_LINE_BYTES

WRITE_TIMEOUT_S = 1.0  # a reader that takes nothing for this long loses the bytes, as on a UART
# termios speed constants by baud rate, to see which rate the host configured on the pty
_TERMIOS_SPEEDS = {int(name[1:]): getattr(termios, name) for name in dir(termios)
                   if name[:1] == "B" and name[1:].isdigit()}


FAULT_KINDS = ("reset", "drop", "hang")


@dataclass
class Faults:
    """Fault injection for reliability tests: faults by command name, and a garbled-byte rate.

    `reset_on`/`drop_on`/`hang_on` map a command name to how many of its next executions misbehave;
    `scheduled` (set by `schedule`, from the bench file's `virtual.faults.board`) maps a kind and a command to
    the executions it strikes, counted from the board's start. A reset fires mid-command (after the first
    timed inference of `infer`); a dropped reply is computed but never sent; a hang stops the board until
    `hang_s` passes or `VirtualBoard.power_cycle()` / `flash()`. `garble_rate` flips one random bit in that
    fraction of the bytes the board sends.
    """

    reset_on: dict[str, int] = field(default_factory=dict)
    drop_on: dict[str, int] = field(default_factory=dict)
    hang_on: dict[str, int] = field(default_factory=dict)
    hang_s: float | None = None
    garble_rate: float = 0.0
    scheduled: dict[str, dict[str, range]] = field(default_factory=dict)  # kind -> command -> executions

    @staticmethod
    def take(table: dict[str, int], cmd: str) -> bool:
        """Consume one pending fault for `cmd`."""
        if table.get(cmd, 0) > 0:
            table[cmd] -= 1
            return True
        return False

    def schedule(self, kind: str, cmd: str, executions: range) -> None:
        """Arm `kind` (reset, drop or hang) for these executions of `cmd` (1 = its first since the start)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        self.scheduled.setdefault(kind, {})[cmd] = executions

    def fires(self, kind: str, cmd: str, execution: int) -> bool:
        """True when `kind` strikes this execution of `cmd`: a pending one-shot fault, or a scheduled one."""
        table = {"reset": self.reset_on, "drop": self.drop_on, "hang": self.hang_on}[kind]
        return Faults.take(table, cmd) or execution in self.scheduled.get(kind, {}).get(cmd, range(0))


class LineReader:
    """Splits a byte stream into command lines; a line over the limit is discarded up to its terminator."""

    def __init__(self, limit: int = MAX_LINE_BYTES, terminator: bytes = b"\n"):
        self.limit = limit
        self.terminator = terminator  # b"%" for the MLPerf Tiny personality
        self.buf = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete lines in `data`, without terminator and trailing '\\r' (None stands for an over-long line)."""
        out: list[bytes | None] = []
        start = 0
        while True:
            nl = data.find(self.terminator, start)
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
            self.clear()
            start = nl + 1

    def clear(self) -> None:
        """Forget a partial line."""
        self.buf.clear()
        self.discarding = False


class Session:
    """One host connection (the pty or a TCP client): a non-blocking descriptor, its line reader and queue."""

    def __init__(self, name: str, fd: int, sock: socket.socket | None = None):
        self.name = name
        self.fd = fd
        self.sock = sock  # a TCP connection (closed with the session); None for the pty
        self.reader = LineReader()
        self.pending: collections.deque[bytes | None] = collections.deque()
        self.closed = False
        os.set_blocking(fd, False)

    def receive(self) -> bytes | None:
        """What has arrived (b"" for nothing), or None when the peer closed a TCP connection."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:  # the pty with nobody on it (EIO), a reset connection
            return b"" if self.sock is None else None
        return data if data or self.sock is None else None

    def write(self, data: bytes) -> None:
        """Write all of `data`, or drop the rest when the reader takes nothing for WRITE_TIMEOUT_S."""
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while view and not self.closed:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                select.select([], [self.fd], [], 0.05)
            except OSError:
                return

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            self.sock.close()


class LineServer:
    """Serves `on_line(session, line)` on a pty (`pty_path`) and TCP 127.0.0.1 (`url`) from one thread.

    `line` is a command line decoded as Latin-1, or None for a line discarded as longer than the limit.
    `send`/`broadcast` write lines (with `\\r\\n`), garbled at `faults.garble_rate`. With `baud`, the pty
    behaves like a UART at that rate: a host that opened it at another rate sends and receives only garbage.
    """

    def __init__(self, on_line: Callable[[Session, str | None], None], faults: Faults, *, seed: int = 0,
                 baud: int | None = None, terminator: bytes = b"\n"):
        self.on_line = on_line
        self.terminator = terminator  # what ends a command: a newline, or `%` (MLPerf Tiny)
        self.faults = faults
        self.baud = baud
        self.pty_path: str | None = None
        self.port: int | None = None
        self.sessions: list[Session] = []
        self._rng = np.random.default_rng(seed)
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._pty: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # a connection is not closed while another thread writes to it

    @property
    def url(self) -> str | None:
        """`socket://127.0.0.1:PORT` when serving TCP."""
        return f"socket://127.0.0.1:{self.port}" if self.port is not None else None

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._thread is not None

    def start(self, *, pty: bool = True, tcp_port: int | None = 0) -> None:
        """Open a new pseudo-terminal and/or listen on TCP 127.0.0.1 (port 0: a free port), then serve."""
        if pty:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no newline translation before the host configures the port
            self._pty = (master, slave)  # the slave stays open: the master never reads EIO between clients
            self.pty_path = os.ttyname(slave)
            self._add(Session("pty", master))
        if tcp_port is not None:
            self._listener = socket.create_server(("127.0.0.1", tcp_port), backlog=4)
            self._listener.setblocking(False)
            self.port = self._listener.getsockname()[1]
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="vboard-serial", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; close the connections, the listener and the pty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for s in self.sessions:
                s.close()
            self.sessions.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None
        self._selector.close()

    def _add(self, session: Session) -> None:
        session.reader = LineReader(terminator=self.terminator)
        with self._lock:
            self.sessions.append(session)
            self._selector.register(session.fd, selectors.EVENT_READ, session)

    def _drop(self, session: Session) -> None:
        with self._lock:
            self._selector.unregister(session.fd)
            self.sessions.remove(session)
            session.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                if key.data is None:
                    self._accept()
                else:
                    self._receive(key.data)
            for s in list(self.sessions):
                while s.pending and not self._stop.is_set():
                    raw = s.pending.popleft()
                    self.on_line(s, None if raw is None else raw.decode("latin-1"))

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._add(Session("tcp", conn.fileno(), conn))

    def _receive(self, session: Session) -> None:
        data = session.receive()
        if data is None:
            self._drop(session)
        elif data and self._rate_mismatch(session):
            session.reader.clear()  # framing errors: the board never sees a command line
        elif data:
            session.pending.extend(session.reader.feed(data))

    def _rate_mismatch(self, session: Session) -> bool:
        """True when the host opened the pty at another baud rate than the board's UART runs at."""
        wanted = _TERMIOS_SPEEDS.get(self.baud) if self.baud is not None else None
        if wanted is None or session.sock is not None:
            return False
        try:
            return termios.tcgetattr(session.fd)[4] != wanted
        except termios.error:
            return False

    def discard_input(self) -> None:
        """Lose everything received and not yet handled, on every connection (a board that was not reading).

        Call it from `on_line` (the serving thread) only.
        """
        for s in self.sessions:
            while s.receive():
                pass
            s.pending.clear()
            s.reader.clear()

    def send(self, session: Session, text: str) -> None:
        """Write one line to one connection."""
        with self._lock:  # also keeps the garbling random generator to one thread
            data = (text + "\r\n").encode("ascii", errors="replace")
            if self._rate_mismatch(session):  # what a receiver at the wrong rate makes of it: no line at all
                data = self._rng.integers(0x80, 0x100, size=len(data), dtype=np.uint8).tobytes()
            session.write(self._garble(data))

    def broadcast(self, text: str) -> None:
        """Write one line to every connection (boot log: every host on the board sees it)."""
        with self._lock:
            for s in list(self.sessions):
                self.send(s, text)

    def _garble(self, data: bytes) -> bytes:
        rate = self.faults.garble_rate
        if rate <= 0:
            return data
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        hit = self._rng.random(arr.size) < rate
        if hit.any():
            bits = self._rng.integers(0, 8, size=int(hit.sum()))
            arr[hit] ^= (1 << bits).astype(np.uint8)
        return arr.tobytes()
