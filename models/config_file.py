"""Reading the project's YAML configuration files (variants, bench, budgets) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: str | Path, *, what: str, hint: str, error: type[Exception],
                      allow_empty: bool = True) -> dict[str, Any]:
    """The YAML mapping in `path`; a missing file, non-UTF-8 text, bad YAML or a non-mapping raises `error`
    naming the file. `allow_empty=False` refuses a file with no settings (a truncated copy must not pass
    as the defaults)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {what} not found; {hint}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save the {what} "
                    "as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        if not allow_empty:
            raise error(f"{p}: the {what} is empty (no settings; a truncated copy?); {hint}")
        data = {}
    if not isinstance(data, dict):
        raise error(f"{p}: the {what} must be a YAML mapping, got {type(data).__name__}")
    return data
