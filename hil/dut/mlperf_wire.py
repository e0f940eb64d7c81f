"""The MLPerf Tiny (EEMBC EnergyRunner) DUT protocol without I/O, as mlcommons/tiny's `benchmark/api` implements it.

Commands are ASCII ending in `%` (at most 80 characters, `EE_CMD_SIZE`); every reply ends with the line
`m-ready`; messages start `m-`, errors `e-[...]`. The formats below are the reference's own
(`internally_implemented.cpp/.h`, the reference submissions' `th_results`); docs/mlperf-tiny.md cites them and
docs/mlperf-tiny-vectors.json holds exchanges both this module's users and the virtual DUT are tested against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hil.errors import HilError

TERMINATOR = "%"  # EE_CMD_TERMINATOR
READY = "m-ready"  # EE_MSG_READY, the last line of every reply
MAX_COMMAND = 80  # EE_CMD_SIZE: longer commands are cut silently by the DUT, so the host never sends one
DB_CHUNK_BYTES = 31  # bytes per `db HEX` command, as the reference runner sends them (at most 38 fit)
LAP_WRAP = 2**32  # m-lap-us is a 32-bit microsecond counter (mbed us_ticker_read)
FIRMWARE = "ULPMark for tinyML Firmware V0.0.1"  # EE_FW_VERSION
MODELS = ("kws01", "vww01", "ic01", "ad01")  # TH_MODEL_VERSION of the four reference benchmarks

_LAP = re.compile(r"^m-lap-us-(\d+)$")
_RESULTS = re.compile(r"^m-results-\[([^\]]*)\]$")
_EXPECTING = re.compile(r"^m-\[Expecting (\d+) bytes\]$")
_ERROR = re.compile(r"^e-\[(.*)\]$")
_NAME = re.compile(r"^m-name-dut-\[([^\]]+)\]$")
_TAGGED = re.compile(r"^m-(profile|model)-\[([^\]]+)\]$")


class MlperfError(HilError):
    """An MLPerf Tiny DUT refused a command (`e-[...]`) or answered what the protocol does not allow; carries the
    reply's lines."""

    def __init__(self, message: str, *, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = list(lines or [])


def command(text: str) -> bytes:
    """The bytes of one command: `text%`. Refuses what the DUT would misread (empty, a `%`, longer than 80)."""
    if not text.strip() or TERMINATOR in text or "\n" in text or "\r" in text:
        raise ValueError(f"not an MLPerf Tiny command: {text!r}")
    if len(text) > MAX_COMMAND:
        raise ValueError(f"MLPerf Tiny command of {len(text)} characters; the DUT cuts it at {MAX_COMMAND}")
    return (text + TERMINATOR).encode("ascii")


def db_commands(data: bytes, chunk: int = DB_CHUNK_BYTES) -> list[str]:
    """`db load N` and the `db HEX` commands that stream `data` (lowercase hex, `chunk` bytes each)."""
    if not data:
        raise ValueError("an MLPerf Tiny input has at least one byte (`db load 0` is an error on the DUT)")
    if not 1 <= chunk <= (MAX_COMMAND - 3) // 2:
        raise ValueError(f"db chunk of {chunk} bytes does not fit an {MAX_COMMAND}-character command")
    return [f"db load {len(data)}"] + [f"db {data[i:i + chunk].hex()}" for i in range(0, len(data), chunk)]


def error_text(line: str) -> str | None:
    """The text of an `e-[...]` error line, or None."""
    match = _ERROR.match(line)
    return match.group(1) if match else None


def parse_name(lines: list[str]) -> str:
    """`name`'s reply: the DUT's name (`m-name-dut-[NAME]`)."""
    for line in lines:
        match = _NAME.match(line)
        if match:
            return match.group(1)
    raise MlperfError(f"'name' reply has no m-name-dut-[...] line: {lines!r}", lines=lines)


def parse_profile(lines: list[str]) -> tuple[str, str]:
    """`profile`'s reply: (firmware, model), e.g. ("ULPMark for tinyML Firmware V0.0.1", "kws01")."""
    tags = {m.group(1): m.group(2) for m in map(_TAGGED.match, lines) if m}
    if set(tags) != {"profile", "model"}:
        raise MlperfError(f"'profile' reply lacks m-profile-[...] or m-model-[...]: {lines!r}", lines=lines)
    return tags["profile"], tags["model"]


def parse_results(line: str) -> tuple[float, ...]:
    """The values of an `m-results-[...]` line. A trailing comma is the reference vww01's own (tolerated, as by
    the reference runner); an empty, unterminated or non-numeric list is refused."""
    match = _RESULTS.match(line)
    if not match:
        raise MlperfError(f"malformed results line {line!r}: expected m-results-[v,v,...]", lines=[line])
    parts = match.group(1).split(",")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts or any(not p.strip() for p in parts):
        raise MlperfError(f"malformed results line {line!r}: empty value", lines=[line])
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise MlperfError(f"malformed results line {line!r}: not a number", lines=[line]) from None


def expecting(lines: list[str]) -> int:
    """`db load N`'s reply: the N the DUT expects."""
    for line in lines:
        match = _EXPECTING.match(line)
        if match:
            return int(match.group(1))
    raise MlperfError(f"'db load' reply has no m-[Expecting N bytes]: {lines!r}", lines=lines)


@dataclass(frozen=True)
class InferReply:
    """`infer N W`'s reply: its counts, the two timestamps (None in energy mode: GPIO edges instead) and the
    results of the last inference."""

    n: int
    warmup: int
    laps_us: tuple[int, int] | None
    results: tuple[float, ...]

    @property
    def window_us(self) -> int | None:
        """Microseconds between the timestamps (the 32-bit counter's wrap taken into account)."""
        if self.laps_us is None:
            return None
        return (self.laps_us[1] - self.laps_us[0]) % LAP_WRAP

    @property
    def latency_us(self) -> float | None:
        """Mean microseconds per inference in the window (th_pre and th_post included, as the reference times it)."""
        window = self.window_us
        return None if window is None else window / self.n

    @property
    def inferences_per_s(self) -> float | None:
        """MLPerf Tiny's throughput of this window: N / (t2 - t1)."""
        window = self.window_us
        return None if not window else self.n / (window / 1e6)


def parse_infer(lines: list[str], n: int, warmup: int, *, energy_mode: bool = False) -> InferReply:
    """Check `infer N W`'s reply line by line against the reference order and read it.

    Order (internally_implemented.cpp ee_infer): m-warmup-start-W, m-warmup-done, m-infer-start-N, two m-lap-us
    lines (performance mode), m-infer-done, m-results-[...]. Other lines (a DUT's own logs) are ignored.
    """
    want = [f"m-warmup-start-{warmup}", "m-warmup-done", f"m-infer-start-{n}"]
    protocol = [line for line in lines if line.startswith(("m-warmup", "m-infer", "m-lap-us-", "m-results-"))]
    head = protocol[:3]
    if head != want:
        raise MlperfError(f"'infer {n} {warmup}' reply does not start {want}: got {head}", lines=lines)
    rest = protocol[3:]
    laps = [int(m.group(1)) for m in map(_LAP.match, rest) if m]
    if energy_mode:
        if laps:
            raise MlperfError(f"'infer {n} {warmup}': m-lap-us lines in energy mode", lines=lines)
    elif len(laps) != 2:
        raise MlperfError(f"'infer {n} {warmup}' reply has {len(laps)} m-lap-us timestamps, expected 2 (is the "
                          "DUT built in energy mode? then measure it in energy mode)", lines=lines)
    tail = [line for line in rest if not _LAP.match(line)]
    if len(tail) != 2 or tail[0] != "m-infer-done":
        raise MlperfError(f"'infer {n} {warmup}' reply does not end m-infer-done, m-results-[...]: got {tail}",
                          lines=lines)
    return InferReply(n, warmup, (laps[0], laps[1]) if laps else None, parse_results(tail[1]))


def format_results(values: list[float] | tuple[float, ...], model: str) -> str:
    """The `m-results-[...]` line a reference submission prints for `model` (kws01's integer rendering, vww01's
    trailing comma, ic01's `%0.3f`, ad01's one value)."""
    if model == "kws01":  # "0.%d" "%d" "%d" of int(x*10), int(x*100)%10, int(x*1000)%10: truncated decimals
        cells = [f"0.{int(v * 10)}{int(v * 100) % 10}{int(v * 1000) % 10}" for v in values]
        return "m-results-[" + ",".join(cells) + "]"
    if model == "vww01":  # nresults 3 against 2 categories: a comma after every value
        return "m-results-[" + "".join(f"{v:0.3f}," for v in values) + "]"
    return "m-results-[" + ",".join(f"{v:0.3f}" for v in values) + "]"
