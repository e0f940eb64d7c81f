"""The VISA message transport the drivers talk through: text commands, queries and binary blocks.

pyvisa with the pure-Python `@py` backend by default; any other backend string (e.g. an NI-VISA
library path or `@ivi`) is passed to `pyvisa.ResourceManager` unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError, read_block

RECV_SIZE = 1 << 20  # bytes per socket read for binary block transfers


class TransportError(InstrumentError):
    """The instrument could not be reached, did not answer in time, or dropped the connection."""


class VisaTransport:
    """One VISA session with `\\n` termination, a resizable timeout and a reconnect for retries."""

    def __init__(self, resource: str, *, backend: str = "@py", timeout_s: float = 5.0) -> None:
        self.resource = resource
        self.backend = backend
        self.timeout_s = float(timeout_s)
        self._rm = None
        self._res = None
        self.open()

    def _where(self) -> str:
        return f"{self.resource} (VISA backend {self.backend})"

    def open(self) -> None:
        """Open the resource; raise TransportError naming the resource and the backend."""
        import pyvisa  # imported here so `import instruments` stays cheap

        try:
            if self._rm is None:
                self._rm = pyvisa.ResourceManager(self.backend)
            self._res = self._rm.open_resource(
                self.resource, read_termination="\n", write_termination="\n",
                timeout=int(self.timeout_s * 1000), open_timeout=int(self.timeout_s * 1000),
            )
        except Exception as exc:  # pyvisa raises several unrelated types here
            raise TransportError(f"cannot open {self._where()}: {exc}") from None
        self._tune_socket()

    def _tune_socket(self) -> None:
        """Tune pyvisa-py SOCKET sessions, which have no attributes for either (other backends: no-op).

        Nagle off: a command written right after another must not wait ~40 ms for a delayed ACK.
        A larger receive size: pyvisa-py reads 4 KB per recv(), i.e. ~250 select+recv calls per MB.
        """
        import socket

        with contextlib.suppress(Exception):
            session = self._rm.visalib.sessions[self._res.session]
            session.interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if getattr(session, "max_recv_size", 0) < RECV_SIZE:
                session.max_recv_size = RECV_SIZE

    def close(self) -> None:
        """Close the session (idempotent)."""
        if self._res is not None:
            with contextlib.suppress(Exception):
                self._res.close()
            self._res = None

    def reconnect(self) -> None:
        """Close and reopen the session: the recovery step after a dropped or confused connection."""
        self.close()
        self.open()

    @contextlib.contextmanager
    def timeout(self, seconds: float) -> Iterator[None]:
        """Temporarily use a VISA timeout of `seconds` (sized by the caller to acquisition and transfer)."""
        old = self.timeout_s
        self._set_timeout(max(seconds, 0.05))
        try:
            yield
        finally:
            self._set_timeout(old)

    def _set_timeout(self, seconds: float) -> None:
        self.timeout_s = float(seconds)
        if self._res is not None:
            self._res.timeout = int(self.timeout_s * 1000)

    def _require(self):
        if self._res is None:
            raise TransportError(f"{self._where()} is closed")
        return self._res

    def write(self, command: str) -> None:
        """Send one command line."""
        res = self._require()
        try:
            res.write_raw(command.encode("ascii") + b"\n")
        except Exception as exc:
            raise TransportError(f"cannot send {command!r} to {self._where()}: {exc}") from None

    def query(self, command: str) -> str:
        """Send a query and return its one-line text answer, stripped. Never used for binary data."""
        self.write(command)
        res = self._require()
        try:
            return res.read().strip()
        except Exception as exc:
            raise TransportError(
                f"no answer to {command!r} from {self._where()} within {self.timeout_s:g} s: {exc}"
            ) from None

    def _read_chunk(self, n: int) -> bytes:
        """Read up to n bytes with termination disabled; b'' on timeout (the block reader reports it)."""
        import pyvisa

        res = self._require()
        try:
            with res.ignore_warning(pyvisa.constants.StatusCode.success_max_count_read):
                data, _status = res.visalib.read(res.session, n)
        except pyvisa.errors.VisaIOError:
            return b""
        return bytes(data)

    def query_block(self, command: str, *, chunk_size: int = 1 << 20) -> bytes:
        """Send a query and read its IEEE 488.2 definite-length block answer exactly."""
        self.write(command)
        res = self._require()
        res.read_termination = None  # binary data may contain 0x0A; disable termination while reading
        try:
            return read_block(self._read_chunk, terminator=b"\n", chunk_size=chunk_size)
        except BlockError as exc:
            raise BlockError(f"{exc} (answer to {command!r} from {self._where()}, "
                             f"timeout {self.timeout_s:g} s)") from None
        finally:
            if self._res is not None:
                self._res.read_termination = "\n"
