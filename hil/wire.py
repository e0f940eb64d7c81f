"""The HIL device protocol on the wire (docs/protocol.md, version 2; version 1 read): constants, types, CRC, lines.

One definition shared by both ends: the host client (`hil.protocol.DutClient`), the virtual board's device
core (`hil.sim.device`) and `hil firmware`'s flash check. Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import statistics
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL_VERSION = 2  # the version this package's devices speak (the virtual board, the firmware core)
SUPPORTED_PROTOCOLS = (1, 2)  # the versions the host speaks, whichever the device announces
MAX_LINE_BYTES = 1024  # a command line's limit before its terminator
CHUNK_MAX_BYTES = 750  # the most tensor bytes one `data` line carries
REPLY_PREFIX = "@hil "
READY_MARK = "hil-ready"
FATAL_MARK = "hil-fatal"  # `hil-fatal REASON`: the board's last line before it stops (spec, "Fatal stops")
# `hil-ready protocol=2 reset=REASON`: the resets that mean the firmware crashed (spec, "Fatal stops")
CRASH_RESETS = ("panic", "watchdog", "brownout")
MAX_INFERENCE_S = 10.0  # the longest inference the firmware accepts (spec, "Timeouts")
INFER_MAX_N = 1000  # `infer N [W [GAP_MS]]`: 1 <= N <= 1000, 0 <= W <= 100, 0 <= GAP_MS <= 1000 (spec)
INFER_MAX_WARMUP = 100
INFER_MAX_GAP_MS = 1000
# mean_us and std_us come rounded to 0.1 us: a reported statistic further than this from the one its own
# latencies give is not rounding but an inconsistent reply
STATS_TOLERANCE_US = 0.06
DEVICE_DEADLINE_S = 1.0  # reply deadline of the quick commands
COMMANDS = ("version", "hello", "sync", "infer", "input", "data", "run", "profile", "reset")
COMMANDS_V1 = tuple(c for c in COMMANDS if c != "sync")
CRC_MARK = "*"  # separates a line from its CRC32 (docs/protocol.md, "Transport")

E_UNKNOWN_CMD = "E_UNKNOWN_CMD"
E_LINE_TOO_LONG = "E_LINE_TOO_LONG"
E_LINE_CRC = "E_LINE_CRC"
E_ARGS = "E_ARGS"
E_STATE = "E_STATE"
E_BASE64 = "E_BASE64"
E_LENGTH = "E_LENGTH"
E_CRC = "E_CRC"
E_MODEL = "E_MODEL"
E_INVOKE = "E_INVOKE"
ERROR_CODES = (
    E_UNKNOWN_CMD, E_LINE_TOO_LONG, E_LINE_CRC, E_ARGS, E_STATE, E_BASE64, E_LENGTH, E_CRC, E_MODEL, E_INVOKE
)
UPLOAD_ERRORS = (E_BASE64, E_CRC, E_STATE, E_LENGTH)  # a failed upload the host restarts from `input`


# -- lines ------------------------------------------------------------------------------------------------
def ready_banner(version: int = PROTOCOL_VERSION) -> str:
    """The log line a device prints when it (re)boots: `hil-ready protocol=2`."""
    return f"{READY_MARK} protocol={version}"


def fatal_reason(line: str) -> str | None:
    """Why the board stopped, from a log line: `hil-fatal REASON`, or a boot line naming a crash reset
    (`hil-ready protocol=2 reset=panic`); None for any other line."""
    text = line.strip()
    if text.startswith(FATAL_MARK + " ") or text == FATAL_MARK:
        return text[len(FATAL_MARK):].strip() or "no reason given"
    if READY_MARK in text:
        for token in text[text.index(READY_MARK):].split():
            if token.startswith("reset=") and token[6:] in CRASH_RESETS:
                return f"it restarted after a crash (reset reason: {token[6:]})"
    return None


def split_command(line: str) -> list[str]:
    """The tokens of a command line (runs of spaces separate them); [] for a blank line, which is no command."""
    return [t for t in line.rstrip("\r").split(" ") if t]


def sign_command(line: str) -> str:
    """A command line with its own CRC appended (` *crc32`), as a host sends it to a version 2 device."""
    return f"{line} {CRC_MARK}{crc32_hex(line.encode('ascii'))}"


def strip_command_crc(line: str) -> str | None:
    """The command of a line with its ` *crc32` suffix checked and removed; the line as is when it has none.

    None when the line's last token starts with `*` but is not a well-formed CRC matching the line
    (the device then answers E_LINE_CRC and executes nothing).
    """
    text = line.rstrip("\r").rstrip(" ")
    tokens = text.split(" ")
    if not tokens[-1].startswith(CRC_MARK):
        return line
    if len(text) < 11 or text[-10:-8] != " " + CRC_MARK:
        return None
    want = normalize_crc32(text[-8:])
    body = text[:-10]
    return body if want is not None and crc32_hex(body.encode("latin-1")) == want else None


def format_reply(obj: dict[str, Any], version: int = PROTOCOL_VERSION) -> str:
    """A reply line without its terminator: `@hil `, one compact JSON object and (version 2) `*` + its CRC32."""
    text = json.dumps(obj, separators=(",", ":"))
    if version < 2:
        return REPLY_PREFIX + text
    return f"{REPLY_PREFIX}{text}{CRC_MARK}{crc32_hex(text.encode('utf-8'))}"


def error_reply(cmd: str, code: str, message: str) -> dict[str, Any]:
    """The reply object of a failed command."""
    return {"ok": False, "cmd": cmd, "code": code, "error": message}


def parse_reply(line: str, *, require_crc: bool = False) -> dict[str, Any] | None:
    """The JSON object of a reply line, or None when the line is not a well-formed reply.

    A line ending in `*` and 8 hex digits must match that CRC32; a line without one is read only when
    `require_crc` is false (a version 1 device) and never when it claims version 2 or later. One stray byte
    after the CRC (the `\r` of the terminator with a bit flipped) is ignored: the CRC covers the content.
    """
    at = line.find(REPLY_PREFIX + "{")
    if at < 0:
        return None
    text = line[at + len(REPLY_PREFIX) :].rstrip("\r\n")
    if len(text) > 10 and text[-10] == CRC_MARK and normalize_crc32(text[-9:-1]) == text[-9:-1]:
        text = text[:-1]  # a garbled '\r'
    signed = len(text) > 9 and text[-9] == CRC_MARK and normalize_crc32(text[-8:]) == text[-8:]
    if signed:
        text, crc = text[:-9], text[-8:]
        if crc32_hex(text.encode("utf-8", errors="replace")) != crc:
            return None
    elif require_crc:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool) or not isinstance(obj.get("cmd"), str):
        return None
    if not signed and isinstance(obj.get("protocol"), int) and obj["protocol"] >= 2:
        return None  # a version 2 device never sends a line without its CRC: this one lost it on the way
    return obj


def looks_like_reply(line: str) -> bool:
    """A line that is not a well-formed reply but was probably meant as one (garbage, not log output)."""
    return "@hil" in line or '"ok":' in line or '"cmd":' in line


# -- CRC32 ------------------------------------------------------------------------------------------------
def crc32_hex(data: bytes) -> str:
    """IEEE CRC32 as 8 lowercase hex digits, the protocol's wire format."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def normalize_crc32(text: str) -> str | None:
    """A CRC32 argument (exactly 8 hex digits, either case) in the wire format, or None when malformed."""
    if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
        return None
    return text.lower()


# -- timing -----------------------------------------------------------------------------------------------
def reply_deadline_s(command: str, last_latency_s: float | None = None) -> float:
    """The device's reply deadline for a command line, per the spec's timeout table."""
    tokens = split_command(command)
    name = tokens[0] if tokens else ""
    if name in ("run", "profile"):
        return DEVICE_DEADLINE_S + MAX_INFERENCE_S
    if name == "infer":
        try:
            n = int(tokens[1])
            w = int(tokens[2]) if len(tokens) > 2 else 0
            gap_s = (int(tokens[3]) if len(tokens) > 3 else 0) / 1000.0
        except (IndexError, ValueError):
            return DEVICE_DEADLINE_S
        per = 2.0 * last_latency_s if last_latency_s else MAX_INFERENCE_S
        return DEVICE_DEADLINE_S + (n + w) * per + n * gap_s
    return DEVICE_DEADLINE_S


def latency_stats(latency_us: list[int] | tuple[int, ...]) -> dict[str, float]:
    """mean/min/max/population std of latencies, as the device reports them."""
    return {
        "mean_us": round(statistics.fmean(latency_us), 1),
        "min_us": int(min(latency_us)),
        "max_us": int(max(latency_us)),
        "std_us": round(statistics.pstdev(latency_us), 1) if len(latency_us) > 1 else 0.0,
    }


# -- reply types ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and quantization of the model's input or output tensor (`hello`'s `input`/`output`)."""

    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int
    bytes: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        """Build from the `input`/`output` object of a `hello` reply."""
        return cls(
            tuple(int(x) for x in d["shape"]),
            str(d["dtype"]),
            float(d.get("scale", 0.0)),
            int(d.get("zero_point", 0)),
            int(d["bytes"]),
        )

    @classmethod
    def of(cls, shape: tuple[int, ...], dtype: str, scale: float, zero_point: int, nbytes: int) -> TensorSpec:
        """A tensor as the device reports it: scale and zero point are 0 for float tensors."""
        floating = dtype.startswith("float")
        return cls(
            tuple(int(x) for x in shape),
            dtype,
            0.0 if floating else float(scale),
            0 if floating else int(zero_point),
            int(nbytes),
        )

    def to_json(self) -> dict[str, Any]:
        """The `input`/`output` object of a `hello` reply."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ModelId:
    """Identity of the flatbuffer the device runs."""

    crc32: str
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """The `model` object of a `hello` reply."""
        return {"crc32": self.crc32, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Hello:
    """The `hello` reply: device, firmware, model, arena; `model_error` is set when the model is unusable."""

    protocol: int
    firmware: str
    board: str
    board_id: str
    simulated: bool
    cpu_mhz: int
    marker_gpio: int
    model: ModelId | None
    arena_configured: int | None
    arena_used: int | None
    input: TensorSpec | None
    output: TensorSpec | None
    ops: tuple[str, ...]
    model_error: str | None = None
    model_error_code: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Hello:
        """Build from a `hello` reply (ok or E_MODEL)."""
        model = d.get("model") or None
        arena = d.get("arena") or {}
        return cls(
            protocol=int(d["protocol"]),
            firmware=str(d.get("firmware", "")),
            board=str(d.get("board", "")),
            board_id=str(d.get("board_id", "")),
            simulated=bool(d.get("simulated", False)),
            cpu_mhz=int(d.get("cpu_mhz", 0)),
            marker_gpio=int(d.get("marker_gpio", -1)),
            model=ModelId(str(model["crc32"]), str(model["sha256"]), int(model["bytes"])) if model else None,
            arena_configured=_arena_bytes(arena, "configured"),
            arena_used=_arena_bytes(arena, "used"),
            input=TensorSpec.from_json(d["input"]) if d.get("input") else None,
            output=TensorSpec.from_json(d["output"]) if d.get("output") else None,
            ops=tuple(d.get("ops") or ()),
            model_error=None if d.get("ok") else str(d.get("error", "unknown model error")),
            model_error_code=None if d.get("ok") else str(d.get("code", E_MODEL)),
        )

    @property
    def model_ok(self) -> bool:
        """True when the device has a usable model."""
        return self.model_error is None


@dataclass(frozen=True)
class Version:
    """The `version` reply."""

    protocol: int
    firmware: str
    board: str


@dataclass(frozen=True)
class InferResult:
    """Per-inference latencies of `infer N W GAP_MS` (cycle counter, microseconds) and their statistics."""

    n: int
    warmup: int
    gap_ms: int
    latency_us: tuple[int, ...]
    mean_us: float
    min_us: int
    max_us: int
    std_us: float
    cpu_mhz: int
    problem: str | None = None  # why the reply cannot be the run it reports (infer_reply_problem); None: consistent

    @property
    def latency_ms(self) -> np.ndarray:
        """Latencies in milliseconds."""
        return np.asarray(self.latency_us, dtype=float) / 1000.0

    @classmethod
    def from_reply(cls, r: dict[str, Any]) -> InferResult:
        """An `infer` reply as it came, with `problem` set when it is inconsistent: such a result is kept (a trial
        void with its reason) but none of its numbers may become a figure."""
        problem = infer_reply_problem(r)
        lat = r.get("latency_us")
        lat = tuple(int(x) for x in lat if _is_number(x)) if isinstance(lat, list) else ()

        def num(key: str) -> float:
            value = r.get(key)
            return float(value) if _is_number(value) else math.nan

        def whole(key: str) -> int:
            value = r.get(key)
            return int(value) if _is_int(value) else -1

        return cls(whole("n"), whole("warmup"), whole("gap_ms"), lat, num("mean_us"), whole("min_us"),
                   whole("max_us"), num("std_us"), whole("cpu_mhz"), problem)


def _arena_bytes(arena: dict[str, Any], key: str) -> int | None:
    """`hello`'s arena size `key`: None when not known; a bool, a fraction or a negative size is refused."""
    value = arena.get(key)
    if value is not None and not (_is_int(value) and value >= 0):
        raise ValueError(f"arena {key} {json.dumps(value)} is not a size in bytes")
    return value


def _is_int(value: Any) -> bool:
    """A JSON integer (a JSON bool is not one, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def infer_reply_problem(r: dict[str, Any]) -> str | None:
    """Why an `infer` reply cannot be the run it reports, or None: its types, signs and ranges, its count of
    latencies, and its statistics against its own latencies. A firmware bug or a reply corrupted before its CRC
    was computed reads as well as a good one; only this check keeps its figure from being recorded valid."""
    for key, low, high in (("n", 1, INFER_MAX_N), ("warmup", 0, INFER_MAX_WARMUP),
                           ("gap_ms", 0, INFER_MAX_GAP_MS), ("cpu_mhz", 1, 100_000)):
        value = r.get(key)
        if not _is_int(value):
            return f"'{key}' is {json.dumps(value)}, not an integer"
        if not low <= value <= high:
            return f"'{key}' is {value}, outside {low}..{high}"
    lat = r.get("latency_us")
    if not isinstance(lat, list) or not all(_is_int(x) for x in lat):
        return f"'latency_us' is {json.dumps(lat)[:60]}, not a list of integers"
    if len(lat) != r["n"]:
        return f"{len(lat)} latencies for n={r['n']}"
    if min(lat) < 0:
        return f"a negative latency ({min(lat)} us)"
    if max(lat) > MAX_INFERENCE_S * 1e6:
        return f"a latency of {max(lat)} us, longer than the firmware's {MAX_INFERENCE_S:g} s limit"
    for key in ("min_us", "max_us"):
        if not _is_int(r.get(key)):
            return f"'{key}' is {json.dumps(r.get(key))}, not an integer"
    for key in ("mean_us", "std_us"):
        if not _is_number(r.get(key)):
            return f"'{key}' is {json.dumps(r.get(key))}, not a finite number"
    if r["min_us"] != min(lat) or r["max_us"] != max(lat):
        return (f"min_us {r['min_us']} and max_us {r['max_us']} are not the smallest and largest of its latencies "
                f"({min(lat)}, {max(lat)})")
    mean, std = statistics.fmean(lat), statistics.pstdev(lat)
    if abs(r["mean_us"] - mean) > STATS_TOLERANCE_US:
        return f"mean_us {r['mean_us']} is not the mean of its latencies ({mean:.1f} us)"
    if abs(r["std_us"] - std) > STATS_TOLERANCE_US:
        return f"std_us {r['std_us']} is not the standard deviation of its latencies ({std:.1f} us)"
    return None


@dataclass(frozen=True)
class RunResult:
    """Output tensor (raw bytes, CRC-checked) and latency of one `run`."""

    latency_us: int
    output: bytes
    output_crc32: str
    dtype: str

    def array(self, spec: TensorSpec | None = None) -> np.ndarray:
        """The output as a numpy array in its dtype (shaped when `spec` is given)."""
        arr = np.frombuffer(self.output, dtype=np.dtype(self.dtype))
        return arr.reshape(spec.shape) if spec is not None else arr


@dataclass(frozen=True)
class OpTime:
    """Time of one operator in a `profile` reply."""

    index: int
    op: str
    us: int


@dataclass(frozen=True)
class Profile:
    """Per-operator time of one inference."""

    ops: tuple[OpTime, ...]
    total_us: int
