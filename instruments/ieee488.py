"""IEEE 488.2 definite-length arbitrary block (`#<n><len><data>`): the one reader and writer of binary blocks.

Every binary transfer in the drivers and the simulator goes through `read_block` / `encode_block`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from instruments.errors import InstrumentError

#: A function that returns at most `n` bytes (fewer only at end of data or on a timeout).
ReadFn = Callable[[int], bytes]


class BlockError(InstrumentError):
    """A malformed or truncated IEEE 488.2 block: the data must be discarded, never used short."""


def encode_block(payload: bytes | bytearray | memoryview, terminator: bytes = b"\n") -> bytes:
    """Wrap `payload` in a definite-length block header `#<n><len>` followed by `terminator`."""
    length = str(len(payload)).encode("ascii")
    if len(length) > 9:
        raise BlockError(f"block payload of {len(payload)} bytes exceeds the 9-digit IEEE 488.2 length field")
    return b"#" + str(len(length)).encode("ascii") + length + bytes(payload) + terminator


def _read_exact(read: ReadFn, n: int, what: str, chunk_size: int) -> bytes:
    """Read exactly `n` bytes in chunks; raise BlockError naming `what` if the data ends early."""
    if n == 0:
        return b""
    buf = bytearray()
    while len(buf) < n:
        part = read(min(chunk_size, n - len(buf)))
        if not part:
            raise BlockError(f"truncated IEEE 488.2 block: {what} has {len(buf)} of {n} bytes")
        buf += part
    return bytes(buf)


def read_header(read: ReadFn) -> int:
    """Read `#<n><len>` and return the payload length; skips nothing, accepts only definite-length headers."""
    hash_ = read(1)
    if hash_ != b"#":
        raise BlockError(f"IEEE 488.2 block must start with '#', got {hash_!r}")
    ndigits_b = read(1)
    if len(ndigits_b) != 1 or not ndigits_b.isdigit():
        raise BlockError(f"IEEE 488.2 block header digit count must be 1-9, got {ndigits_b!r}")
    ndigits = int(ndigits_b)
    if ndigits == 0:
        raise BlockError("indefinite-length IEEE 488.2 block ('#0') is not supported; use a definite length")
    digits = _read_exact(read, ndigits, "the length field", ndigits)
    if not digits.isdigit():
        raise BlockError(f"IEEE 488.2 block length field must be {ndigits} ASCII digits, got {digits!r}")
    return int(digits)


def read_block(read: ReadFn, *, terminator: bytes = b"\n", chunk_size: int = 1 << 20) -> bytes:
    """Read one complete block from a stream: header, exactly `len` payload bytes, then `terminator`."""
    length = read_header(read)
    payload = _read_exact(read, length, "the payload", chunk_size)
    if terminator:
        end = read(len(terminator))
        if end != terminator:
            raise BlockError(f"IEEE 488.2 block of {length} bytes not followed by {terminator!r}, "
                             f"got {end!r}")
    return payload


def parse_block(data: bytes, *, terminator: bytes = b"\n") -> bytes:
    """Parse one complete response held in memory; extra bytes after the terminator are an error."""
    stream = io.BytesIO(data)
    payload = read_block(stream.read, terminator=terminator)
    rest = stream.read()
    if rest:
        raise BlockError(f"{len(rest)} extra bytes after the IEEE 488.2 block: {rest[:16]!r}")
    return payload
