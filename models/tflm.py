"""The TFLite Micro runtime (the same C++ kernels as on the MCU, built for the host) behind a small API.

TFLM reports why a model fails only on the C-level stderr (fd 2); this module captures it so errors
carry the real reason, and finds the smallest arena by bisection.
"""

from __future__ import annotations

import os
import re
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


def min_arena_bytes(model: bytes, *, alt_decompression_bytes: int = 0) -> int:
    """Smallest arena size (bytes) in which TFLM allocates the model, found by bisection.

    The search is bracketed around the allocator's own report (it can be off either way by alignment and
    the allocator's bookkeeping) and never probes far below it: a much too small arena can abort the
    process inside TFLM for compressed (DECODE) models instead of failing cleanly.
    """
    reported = reported_arena_bytes(model, alt_decompression_bytes=alt_decompression_bytes)

    def fits(size: int) -> bool:
        return not isinstance(_construct(model, size, alt_decompression_bytes)[0], BaseException)

    hi = reported
    while not fits(hi):
        hi = min(hi * 2, MAX_ARENA_BYTES)
    lo = max(hi // 2, reported // 2)
    if fits(lo):
        raise TflmError(
            f"TFLM arena search: model allocates in {lo} bytes, far below its report of {reported}"
        )
    while hi - lo > 1:  # invariant: lo fails, hi fits
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


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
