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
#: The resource forms the drivers are used with, for error messages.
RESOURCE_FORMS = ("TCPIP0::<host>::INSTR", "TCPIP0::<host>::5025::SOCKET",
                  "USB0::<vendor id>::<product id>::<serial>::INSTR")


class TransportError(InstrumentError):
    """The instrument could not be reached, did not answer in time, or dropped the connection."""


class ConnectionClosed(TransportError):
    """The instrument (or the network) closed the connection while an answer was being read."""


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
            self._check_resource_name()
            self._res = self._rm.open_resource(
                self.resource, read_termination="\n", write_termination="\n",
                timeout=int(self.timeout_s * 1000), open_timeout=int(self.timeout_s * 1000),
            )
        except TransportError:
            raise
        except Exception as exc:  # pyvisa raises several unrelated types here
            raise TransportError(f"cannot open {self._where()}: {exc}") from None
        self._tune_socket()

    def _check_resource_name(self) -> None:
        """Reject a resource string the backend cannot parse, before pyvisa fails on it obscurely."""
        import pyvisa

        try:
            valid = self._rm.resource_info(self.resource).resource_class is not None
        except pyvisa.errors.VisaIOError as exc:  # backends that raise instead (an alias they do not know)
            valid = exc.error_code != pyvisa.constants.StatusCode.error_invalid_resource_name
        if not valid:
            raise TransportError(f"malformed VISA resource {self.resource!r} (VISA backend {self.backend}); "
                                 f"expected a form like {', '.join(RESOURCE_FORMS)}")

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
        """Send a query and return its one-line ASCII answer, stripped. Never used for binary data."""
        self.write(command)
        res = self._require()
        try:
            raw = res.read_raw()
        except Exception as exc:
            raise self._read_failure(command, exc) from None
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            shown = raw[:48] + (b"..." if len(raw) > 48 else b"")
            raise TransportError(f"the answer to {command!r} from {self._where()} is not ASCII text: received "
                                 f"{len(raw)} bytes {shown!r}; is this the instrument you meant?") from None

    def _read_failure(self, command: str, exc: Exception) -> TransportError:
        """Name why reading the answer to `command` failed: a closed connection, the timeout, or the error."""
        import pyvisa

        if self._closed(exc):
            return ConnectionClosed(f"connection to {self._where()} closed by the instrument before it "
                                    f"answered {command!r}")
        if getattr(exc, "error_code", None) == pyvisa.constants.StatusCode.error_timeout:
            return TransportError(f"no answer to {command!r} from {self._where()} within {self.timeout_s:g} s")
        return TransportError(f"reading the answer to {command!r} from {self._where()} failed: {exc}")

    def _closed(self, exc: Exception) -> bool:
        """True if `exc` (or, for pyvisa-py, the socket itself) says the peer closed the connection."""
        import pyvisa

        lost = pyvisa.constants.StatusCode.error_connection_lost
        return getattr(exc, "error_code", None) == lost or self._peer_closed()

    def _peer_closed(self) -> bool:
        """True if a pyvisa-py SOCKET session's peer has closed it (readable with no data); else False.

        pyvisa-py reports a closed socket only as a timeout, so the socket itself is asked.
        """
        import select
        import socket

        with contextlib.suppress(Exception):
            sock = self._rm.visalib.sessions[self._res.session].interface
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        return False

    def _read_chunk(self, n: int) -> bytes:
        """Read up to n bytes with termination disabled; b'' on timeout (the block reader reports it).

        A connection closed by the instrument is ConnectionClosed, not a short read.
        """
        import pyvisa

        res = self._require()
        try:
            with res.ignore_warning(pyvisa.constants.StatusCode.success_max_count_read):
                data, _status = res.visalib.read(res.session, n)
        except pyvisa.errors.VisaIOError as exc:
            if self._closed(exc):
                raise ConnectionClosed(f"connection to {self._where()} closed by the instrument") from None
            return b""
        return bytes(data)

    def query_block(self, command: str, *, chunk_size: int = 1 << 20) -> bytes:
        """Send a query and read its IEEE 488.2 definite-length block answer exactly."""
        self.write(command)
        res = self._require()
        res.read_termination = None  # binary data may contain 0x0A; disable termination while reading
        received = 0

        def read(n: int) -> bytes:
            nonlocal received
            data = self._read_chunk(n)
            received += len(data)
            return data

        try:
            return read_block(read, terminator=b"\n", chunk_size=chunk_size)
        except BlockError as exc:
            raise BlockError(f"{exc} (answer to {command!r} from {self._where()}: nothing more within the "
                             f"timeout of {self.timeout_s:g} s; VISA drops the bytes of a read that times out, so "
                             f"up to {chunk_size} more may have arrived before the data stopped)") from None
        except ConnectionClosed as exc:
            raise ConnectionClosed(f"{exc} during the answer to {command!r} ({received} bytes of it read)") from None
        finally:
            if self._res is not None:
                self._res.read_termination = "\n"
