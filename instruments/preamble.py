"""The 10-field `:WAVeform:PREamble?` that Rigol and Keysight share, and the `:WAVeform:DATA?` payload it describes.

Fields: format, type, points, count, xincrement, xorigin, xreference, yincrement, yorigin, yreference.
Only the format codes and the voltage formula (`instruments.conversion`) differ between the vendors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError

FIELDS = ("format", "type", "points", "count", "xincrement", "xorigin", "xreference",
          "yincrement", "yorigin", "yreference")

#: Bytes per point of each transfer format (ASCII: an estimate, for sizing timeouts only).
POINT_BYTES = {"BYTE": 1, "WORD": 2, "ASCII": 16}


def parse_preamble(text: str, formula: str, format_codes: Mapping[int, str]) -> dict[str, Any]:
    """Parse the 10 comma-separated fields; reject a wrong count, a non-number, a zero or negative increment.

    `formula` ("rigol" or "keysight") names the vendor and its voltage formula; `format_codes` maps the
    vendor's format numbers to BYTE/WORD/ASCII, stored as `format_name`.
    """
    vendor = formula.capitalize()
    parts = text.strip().split(",")
    if len(parts) != len(FIELDS):
        raise InstrumentError(f"{vendor} preamble must have 10 fields, got {len(parts)}: {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InstrumentError(f"{vendor} preamble has a non-numeric field: {text!r}") from None
    pre: dict[str, Any] = dict(zip(FIELDS, values, strict=True))
    for key in ("format", "type", "points", "count"):
        pre[key] = int(pre[key])
    for key in ("xincrement", "yincrement"):
        if not pre[key] > 0:
            raise InstrumentError(f"{vendor} preamble {key} must be positive, got {pre[key]!r} in {text!r}")
    pre["format_name"] = format_codes.get(pre["format"], f"unknown ({pre['format']})")
    pre["formula"] = formula
    pre["text"] = text.strip()
    return pre


def check_format(pre: dict[str, Any], fmt: str, where: str) -> None:
    """The preamble must describe the format that was asked for, or its data would be decoded wrongly."""
    if pre["format_name"] != fmt:
        raise InstrumentError(f"{where} sent a preamble for format {pre['format_name']} after "
                              f":WAVeform:FORMat {fmt}: {pre['text']!r}")


def decode_points(block: bytes, fmt: str, expected: int, *, signed: bool) -> np.ndarray:
    """Decode a `:WAVeform:DATA?` payload: comma-separated ASCII, or BYTE / little-endian WORD codes.

    A wrong point count is a BlockError, never a short array.
    """
    if fmt == "ASCII":
        text = block.decode("ascii").strip().strip(",")
        data = np.array(text.split(","), dtype=np.float64) if text else np.zeros(0)
    else:
        width = POINT_BYTES[fmt]
        if len(block) % width:
            raise BlockError(f"{fmt} block of {len(block)} bytes is not a whole number of samples")
        data = np.frombuffer(block, dtype=f"<{'i' if signed else 'u'}{width}")
    if data.size != expected:
        raise BlockError(f"waveform block holds {data.size} points, expected {expected}")
    return data
