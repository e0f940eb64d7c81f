"""The `lab:` section of a bench file: which labgrid coordinator, which places (by tags), how many, and what
each place must hold so that one station can run on it (a board's serial port, a scope's VISA resource,
optionally a power switch). Validated here; `hil.lab.places` acts on it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hil.errors import HilError

DEFAULT_COORDINATOR = "127.0.0.1:20408"
# tag keys as labgrid's coordinator accepts them (labgrid.remote.common.TAG_KEY), and values that survive
# `labgrid-client reserve key=value` on a command line
TAG_KEY = re.compile(r"^[a-z][a-z0-9_]+$")
TAG_VAL = re.compile(r"^[A-Za-z0-9_.:-]+$")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d{1,5}))?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaceNeeds(_Strict):
    """What every place must hold for one station: the board's serial port always, the scope's VISA resource
    unless `scope: false`, a power switch labgrid drives when `power: true`. A name picks one resource when a
    place holds several of a kind (its resource name or match rename)."""

    serial: str | None = None  # name of the NetworkSerialPort (None: the place's only one)
    scope: bool = True  # a PyVISADevice (the scope's VISA resource on the lab network)
    scope_name: str | None = None
    power: bool = False  # a power port labgrid drives (NetworkPowerPort, ...), to hard-reset a hung board
    power_name: str | None = None


class LabConfig(_Strict):
    """A shared lab through labgrid: the coordinator, the tag filter for places, how many places, the
    reservation priority and wait, and when a failing place leaves the rotation."""

    coordinator: str = DEFAULT_COORDINATOR
    tags: dict[str, str] = Field(min_length=1)  # e.g. {board: esp32}; every place with these tags is a candidate
    places: int | Literal["all"] = 1  # how many places to reserve ("all": every place that matches the tags)
    priority: float = Field(0.0, ge=-1000, le=1000)  # labgrid reservation priority (higher is served first)
    wait_s: float = Field(600.0, gt=0, le=7 * 24 * 3600)  # how long to wait for the reservations
    max_failures: int = Field(3, ge=1, le=100)  # consecutive place-level failures before a place leaves rotation
    needs: PlaceNeeds = PlaceNeeds()

    @field_validator("coordinator")
    @classmethod
    def _host_port(cls, value: str) -> str:
        m = _HOST_PORT.match(value.strip())
        if m is None:
            raise ValueError(f"coordinator must be HOST or HOST:PORT, got {value!r}")
        port = int(m["port"]) if m["port"] else 20408
        if not 1 <= port <= 65535:
            raise ValueError(f"coordinator port must be 1-65535, got {port}")
        return f"{m['host']}:{port}"

    @field_validator("tags")
    @classmethod
    def _labgrid_tags(cls, tags: dict[str, Any]) -> dict[str, str]:
        out = {}
        for key, value in tags.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if not TAG_KEY.match(key):
                raise ValueError(f"tag key {key!r} is not a labgrid tag key (a lowercase letter, then lowercase "
                                 "letters, digits, _)")
            if not TAG_VAL.match(text):
                raise ValueError(f"tag {key}={text!r}: a tag value is letters, digits, _ . : - (no spaces or =)")
            out[key] = text
        return out

    @field_validator("places")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"places must be at least 1 or 'all', got {value}")
        return value

    @property
    def filter_text(self) -> str:
        """The tag filter as labgrid-client writes it: `board=esp32 chip=esp32`."""
        return " ".join(f"{k}={v}" for k, v in sorted(self.tags.items()))


def _format(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in ("lab", *err.get("loc", ())))
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        parent = LabConfig if len(err["loc"]) == 1 else PlaceNeeds
        msg = f"unknown key; allowed keys: {', '.join(parent.model_fields)}"
    elif err.get("type") == "missing":
        msg = "missing; e.g. tags: {board: esp32}" if err["loc"] == ("tags",) else "missing"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    return f"{source}: {key}: {msg}"


def parse_lab(data: Any, source: str = "bench.yaml") -> LabConfig:
    """Validate a bench file's `lab:` mapping; a mistake is one HilError line naming the file and the key."""
    if not isinstance(data, dict):
        raise HilError(f"{source}: lab: must be a mapping (coordinator, tags, places, ...), got "
                       f"{type(data).__name__}")
    try:
        return LabConfig.model_validate(data)
    except ValidationError as exc:
        raise HilError(_format(exc, source)) from None
