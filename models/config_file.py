"""Reading the project's YAML configuration files (variants, bench, budgets) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: str | Path, *, what: str, hint: str, error: type[Exception]) -> dict[str, Any]:
    """The YAML mapping in `path`; a missing file, bad YAML or a non-mapping raises `error` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {what} not found; {hint}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{p}: the {what} must be a YAML mapping, got {type(data).__name__}")
    return data
