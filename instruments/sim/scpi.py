"""SCPI header matching for the simulator: `:CHANnel<n>:SCALe?` matches `:CHAN1:SCAL?`, `:channel1:scale?`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def _node_regex(node: str) -> str:
    """One mnemonic: the upper-case short form, optionally the rest of the long form, then `<n>` digits."""
    suffix = ""
    if node.endswith("<n>"):
        node, suffix = node[:-3], r"(\d+)"
    short = "".join(ch for ch in node if ch.isupper() or ch.isdigit() or ch in "_*")
    rest = node[len(short):]
    body = re.escape(short) + (f"(?:{re.escape(rest)})?" if rest else "")
    return body + suffix


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a header pattern such as `:TIMebase[:MAIN]:SCALe?` or `*IDN?` to a regex."""
    query = pattern.endswith("?")
    core = pattern[:-1] if query else pattern
    out, i = "", 0
    for part in re.split(r"(\[[^\]]+\])", core):
        if not part:
            continue
        if part.startswith("["):
            inner = part[1:-1].lstrip(":")
            out += f"(?::{_node_regex(inner)})?"
            continue
        nodes = part.split(":")
        for j, node in enumerate(nodes):
            if not node:
                continue
            sep = ":?" if i == 0 and j == 1 and part.startswith(":") else ":"
            out += (sep if (i > 0 or j > 0) else "") + _node_regex(node)
        i += 1
    return re.compile("^" + out + (r"\?" if query else "") + "$", re.IGNORECASE)


class UnknownCommand(KeyError):
    """No pattern of the table matches the header."""


Handler = Callable[[str, tuple[int, ...]], "bytes | None"]


@dataclass
class Command:
    pattern: str
    regex: re.Pattern[str]
    handler: Handler


class CommandTable:
    """Ordered (pattern, handler) pairs; `dispatch` returns the response or raises UnknownCommand."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def add(self, pattern: str, handler: Handler) -> None:
        self.commands.append(Command(pattern, compile_pattern(pattern), handler))

    def dispatch(self, line: str) -> bytes | None:
        header, _, args = line.strip().partition(" ")
        for cmd in self.commands:
            m = cmd.regex.match(header)
            if m:
                return cmd.handler(args.strip(), tuple(int(g) for g in m.groups() if g is not None))
        raise UnknownCommand(header)


def parse_channel(arg: str) -> int:
    """`CHAN2`, `CHANnel2`, `CH2`, `C2` -> 2."""
    m = re.fullmatch(r"(?:CHAN(?:NEL)?|CH|C)(\d)", arg.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a channel: {arg!r}")
    return int(m.group(1))


def parse_bool(arg: str) -> bool:
    a = arg.strip().upper()
    if a in ("1", "ON"):
        return True
    if a in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean: {arg!r}")
