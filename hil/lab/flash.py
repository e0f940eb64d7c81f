"""The virtual lab's model-flashing service: what esptool over the serial port is to a real place.

A virtual ESP32 has no ROM bootloader, so each virtual place exports a small TCP service (a labgrid
`NetworkService` with username `hil-flash`) that writes a model image onto its board. The exchange is one line
`flash BYTES ARENA SOURCE` followed by BYTES raw bytes; the reply is one line, `ok` or `error TEXT`.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable

from hil.errors import HilError

MAX_IMAGE = 16 * 1024 * 1024  # an ESP32's largest flash: nothing larger is a model image
TIMEOUT_S = 30.0


class FlashServer:
    """Serves `flash(model, arena_bytes, source)` on 127.0.0.1:port (0: a free one) until `stop()`."""

    def __init__(self, flash: Callable[[bytes, int | None, str], None], port: int = 0):
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.settimeout(TIMEOUT_S)
                try:
                    head = self.rfile.readline(200).decode("ascii", "replace").split()
                    if len(head) < 3 or head[0] != "flash" or not head[1].isdigit():
                        raise ValueError("expected 'flash BYTES ARENA SOURCE'")
                    size = int(head[1])
                    if size > MAX_IMAGE:
                        raise ValueError(f"an image of {size} bytes is larger than any ESP32 flash")
                    arena = int(head[2]) if head[2].isdigit() and int(head[2]) > 0 else None
                    data = self.rfile.read(size)
                    if len(data) != size:
                        raise ValueError(f"the image ended after {len(data)} of {size} bytes")
                    outer._flash(data, arena, " ".join(head[3:]) or "model")
                except Exception as exc:  # the client gets the reason, the server goes on
                    self.wfile.write(f"error {exc}\n".encode())
                    return
                self.wfile.write(b"ok\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._flash = flash
        self._server = Server(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"flash-{self.port}", daemon=True)

    def start(self) -> FlashServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def flash_over_service(address: str, model: bytes, *, arena_bytes: int | None = None, source: str = "model",
                       timeout_s: float = TIMEOUT_S) -> None:
    """Write `model` onto a place's board through its flashing service at HOST:PORT; a refusal is a HilError."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(f"flash {len(model)} {arena_bytes or 0} {source}\n".encode() + model)
            reply = sock.makefile("rb").readline(2000).decode("utf-8", "replace").strip()
    except (OSError, ValueError) as exc:
        raise HilError(f"cannot flash through {address}: {exc}") from None
    if reply != "ok":
        raise HilError(f"flashing {source} through {address} failed: {reply or 'no reply'}")
