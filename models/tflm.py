"""The TFLite Micro runtime (the same C++ kernels as on the MCU, built for the host) behind a small API.

TFLM reports why a model fails only on the C-level stderr (fd 2); this module captures it so errors
carry the real reason, and finds the smallest arena by bisection.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from models.errors import ModelError

T = TypeVar("T")

_FD2_LOCK = threading.Lock()
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
# Largest arena tried when looking for the minimum; ESP32-S3 boards with PSRAM have 8 MB.
MAX_ARENA_BYTES = 16 * 1024 * 1024


class TflmError(ModelError):
    """TFLM cannot allocate or run the model; the message carries the runtime's own reason."""


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def capture_fd2(fn: Callable[[], T]) -> tuple[T | BaseException, str]:
    """Run fn with the C-level stderr redirected; return (result or the exception raised, captured text)."""
    with _FD2_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                result: T | BaseException = fn()
            except Exception as exc:  # returned to the caller, who turns it into a TflmError with the reason
                result = exc
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    return result, text


def _reason(text: str, fallback: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    unique = list(dict.fromkeys(lines))
    return "; ".join(unique)[:400] if unique else fallback


def _construct(model: bytes, arena_bytes: int, alt_decompression_bytes: int = 0):
    rt = _runtime()
    return capture_fd2(
        lambda: rt.Interpreter.from_bytes(
            model, arena_size=arena_bytes, alt_decompression_memory_size=alt_decompression_bytes
        )
    )


def tflm_error(model: bytes, *, alt_decompression_bytes: int = 0) -> str | None:
    """Why TFLM cannot allocate this model even with the largest arena, or None when it can."""
    result, text = _construct(model, MAX_ARENA_BYTES, alt_decompression_bytes)
    if isinstance(result, BaseException):
        return _reason(text, str(result))
    return None


def reported_arena_bytes(model: bytes, *, alt_decompression_bytes: int = 0) -> int:
    """Arena bytes the runtime's recording allocator reports after one inference in a large arena."""
    reason = tflm_error(model, alt_decompression_bytes=alt_decompression_bytes)
    if reason is not None:
        raise TflmError(f"TFLM cannot allocate the model: {reason}")
    return TflmModel(model, MAX_ARENA_BYTES, alt_decompression_bytes=alt_decompression_bytes).arena_used_bytes


class _ArenaProbe:
    """Tries arena sizes for one model in a child process: TFLM can crash (SIGSEGV, abort) at some too-small
    arenas, and a crash must not take the harness with it. A crashed child counts as "does not fit" and is
    replaced; the crash is remembered with the arena size that caused it."""

    def __init__(self, model: bytes, alt_decompression_bytes: int) -> None:
        self._model = tempfile.NamedTemporaryFile(suffix=".tflite")  # lives as long as the probe
        self._model.write(model)
        self._model.flush()
        self._alt = alt_decompression_bytes
        self._proc: subprocess.Popen | None = None
        self.crashes: list[tuple[int, str]] = []  # (arena bytes, how the child died)

    def _child(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "models.tflm", self._model.name, str(self._alt)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
        return self._proc

    def fits(self, size: int) -> bool:
        """Whether TFLM allocates the model in `size` bytes (a crash at that size: no)."""
        proc = self._child()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(f"{size}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            answer = ""
        if answer in ("fits", "fails"):
            return answer == "fits"
        code = proc.wait(timeout=30)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.crashes.append((size, how))
        self._proc = None
        return False

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            self._proc.wait(timeout=10)
        self._model.close()


def min_arena_bytes(model: bytes, *, alt_decompression_bytes: int = 0,
                    crashes: list[tuple[int, str]] | None = None) -> int:
    """Smallest arena size (bytes) in which TFLM allocates the model, found by bisection in a child process.

    The search is bracketed around the allocator's own report (it can be off either way by alignment and
    the allocator's bookkeeping). Each size is tried in a child process (`_ArenaProbe`): some models (SVDF,
    LSTM, compressed DECODE) crash TFLM at too-small arenas instead of failing cleanly. Those sizes count as
    too small; `crashes`, when given, receives (arena bytes, how the child died) for each.
    """
    reported = reported_arena_bytes(model, alt_decompression_bytes=alt_decompression_bytes)
    probe = _ArenaProbe(model, alt_decompression_bytes)
    try:
        hi = reported
        while not probe.fits(hi):
            if hi >= MAX_ARENA_BYTES:
                last = probe.crashes[-1] if probe.crashes else None
                crash = f" (TFLM crashed with {last[1]} at {last[0]} bytes)" if last else ""
                raise TflmError(f"TFLM arena search: the model does not allocate in {hi} bytes{crash}")
            hi = min(hi * 2, MAX_ARENA_BYTES)
        lo = max(hi // 2, reported // 2)
        if probe.fits(lo):
            raise TflmError(
                f"TFLM arena search: model allocates in {lo} bytes, far below its report of {reported}"
            )
        while hi - lo > 1:  # invariant: lo fails, hi fits
            mid = (lo + hi) // 2
            if probe.fits(mid):
                hi = mid
            else:
                lo = mid
        return hi
    finally:
        probe.close()
        if crashes is not None:
            crashes.extend(probe.crashes)


def _probe_child(model_path: str, alt_decompression_bytes: int) -> None:
    """The child side of `_ArenaProbe`: read arena sizes from stdin, answer `fits` or `fails` per line."""
    with open(model_path, "rb") as f:
        model = f.read()
    for line in sys.stdin:
        result, _ = _construct(model, int(line), alt_decompression_bytes)
        print("fails" if isinstance(result, BaseException) else "fits", flush=True)


# The bisected minimum and the allocator's report differ by alignment slack and the allocator's own
# bookkeeping: a few hundred bytes (the sine demo model needs 1,936 B and reports 1,536 B).
ARENA_AGREEMENT_BYTES = 512


def arenas_agree(bisected: int, reported: int) -> bool:
    """Whether the bisected minimum arena and the runtime's report agree within the bookkeeping slack."""
    return abs(bisected - reported) <= max(ARENA_AGREEMENT_BYTES, 0.02 * reported)


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and quantization of a model input or output as TFLM sees it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def bytes(self) -> int:
        """Size of the tensor in bytes."""
        return int(np.prod(self.shape)) * self.dtype.itemsize


def _spec(details: dict) -> TensorSpec:
    q = details.get("quantization_parameters", {})
    scales = q.get("scales", [])
    zps = q.get("zero_points", [])
    return TensorSpec(
        shape=tuple(int(d) for d in details["shape"]),
        dtype=np.dtype(details["dtype"]),
        scale=float(scales[0]) if len(scales) else 0.0,
        zero_point=int(zps[0]) if len(zps) else 0,
    )


class TflmModel:
    """A model allocated in the TFLM runtime; raises TflmError with the runtime's reason if it cannot be."""

    def __init__(self, model: bytes, arena_bytes: int | None = None, *, alt_decompression_bytes: int = 0):
        self.model = bytes(model)
        self.alt_decompression_bytes = alt_decompression_bytes
        self.arena_bytes = (
            arena_bytes
            if arena_bytes is not None
            else min_arena_bytes(self.model, alt_decompression_bytes=alt_decompression_bytes)
        )
        result, text = _construct(self.model, self.arena_bytes, alt_decompression_bytes)
        if isinstance(result, BaseException):
            raise TflmError(
                f"TFLM cannot allocate the model in {self.arena_bytes} bytes: {_reason(text, str(result))}"
            )
        self._interp = result
        self.input = _spec(self._interp.get_input_details(0))
        self.output = _spec(self._interp.get_output_details(0))
        self._arena_used: int | None = None

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Run one inference on x (already in the input dtype and shape); return a copy of output 0."""
        x = np.asarray(x, dtype=self.input.dtype).reshape(self.input.shape)
        self._interp.set_input(x, 0)
        try:
            self._interp.invoke()
        except RuntimeError as exc:
            raise TflmError(f"TFLM invoke failed: {exc}") from None
        return np.array(self._interp.get_output(0), copy=True)

    @property
    def arena_used_bytes(self) -> int:
        """Arena bytes used, from the runtime's own allocation report (after one inference)."""
        if self._arena_used is None:
            self.invoke(np.zeros(self.input.shape, self.input.dtype))
            _, text = capture_fd2(self._interp.print_allocations)
            match = _ARENA_TOTAL.search(text)
            if match is None:
                raise TflmError(f"TFLM allocation report not understood: {text[:200]!r}")
            self._arena_used = int(match.group(1))
        return self._arena_used


def quantize_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Convert float inputs to the tensor's dtype with its scale and zero point (identity for floats)."""
    if spec.dtype.kind == "f":
        return x.astype(spec.dtype)
    info = np.iinfo(spec.dtype)
    q = np.round(x / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Convert raw outputs to float with the tensor's scale and zero point (identity for floats)."""
    if spec.dtype.kind == "f":
        return y.astype(np.float32)
    return ((y.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)


if __name__ == "__main__":  # the arena probe's child process (see _ArenaProbe)
    _probe_child(sys.argv[1], int(sys.argv[2]))
