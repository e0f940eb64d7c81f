"""The loopback TCP server the instrument simulators share: one thread accepts, one thread per connection.

A simulator subclasses `TcpServer`, calls `_init_tcp(host, port)` in its constructor and implements
`_serve(conn)`; `start()` binds (port 0: a free port), `stop()` closes every connection and joins the threads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self


class TcpServer:
    """Accept loop and lifecycle of a simulator's TCP endpoint."""

    thread_name = "sim"

    def _init_tcp(self, host: str, port: int) -> None:
        self.host, self._port = host, port
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1] if self._listener else self._port

    def _on_start(self) -> None:
        """Called once the listener is bound, before the first connection is accepted."""

    def start(self) -> Self:
        """Bind (port 0 = a free port) and serve in background threads."""
        if self._listener is not None:
            return self
        self._stop.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._port))
        listener.listen(8)
        listener.settimeout(0.1)
        self._listener = listener
        self._on_start()
        thread = threading.Thread(target=self._accept_loop, name=f"{self.thread_name}-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._stop.set()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError
