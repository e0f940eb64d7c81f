"""A scripted instrument on loopback TCP: checks the exact command bytes a driver sends, in order.

Like PyMeasure's `expected_protocol`, but over a real socket through pyvisa: each step is
(expected command line, reply). A reply of None means the command expects no answer; bytes are sent
as they are (for blocks), str gets a `\\n`. The first mismatch is recorded and the connection closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence

Step = tuple[str, "str | bytes | None"]


class ScriptedInstrument:
    """Serve one connection per `start()`; `received` holds every line, `mismatch` the first wrong one."""

    def __init__(self, script: Sequence[Step], *, host: str = "127.0.0.1") -> None:
        self.script = list(script)
        self.received: list[str] = []
        self.mismatch: str | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(4)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.host = host

    @property
    def resource(self) -> str:
        return f"TCPIP0::{self.host}::{self._sock.getsockname()[1]}::SOCKET"

    @property
    def remaining(self) -> list[Step]:
        done = len(self.received) - (self.mismatch is not None)
        return self.script[done:]

    def __enter__(self) -> ScriptedInstrument:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                if not self._serve(conn):
                    return

    def _serve(self, conn: socket.socket) -> bool:
        conn.settimeout(0.1)
        buf = b""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return True
            if not data:
                return True
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("ascii", "replace")
                index = len(self.received)
                self.received.append(text)
                if index >= len(self.script) or self.script[index][0] != text:
                    expected = self.script[index][0] if index < len(self.script) else "<end of script>"
                    self.mismatch = f"step {index}: expected {expected!r}, got {text!r}"
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    return False
                reply = self.script[index][1]
                if reply is not None:
                    conn.sendall(reply if isinstance(reply, bytes) else reply.encode("ascii") + b"\n")
        return False
