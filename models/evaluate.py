"""Measure a converted model without a board: size, sparsity, accuracy and latency through tf.lite and TFLM.

TFLite and TFLM int8 kernels are not bit-exact (a few LSB), so agreement is judged by top-1 and by
accuracy within a point, never by equal bytes.
"""

from __future__ import annotations

import gzip
import time
import warnings
from dataclasses import dataclass

import numpy as np

from models.datasets import Dataset
from models.tflite_file import read_model
from models.tflm import (
    TensorSpec,
    TflmError,
    TflmModel,
    arenas_agree,
    dequantize_output,
    min_arena_bytes,
    quantize_input,
    tflm_error,
)


@dataclass
class Evaluation:
    """The per-variant metrics plus the raw output probabilities (for cross-variant comparisons and ROC)."""

    metrics: dict
    probs: np.ndarray | None  # tf.lite outputs as probabilities [N, classes], None if tf.lite cannot load it
    probs_tflm: np.ndarray | None  # TFLM outputs, None if not deployable


def _tflite_outputs(data: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Run every sample through tf.lite's interpreter; return probabilities and the median ms per image."""
    from models.tf import tensorflow

    tf = tensorflow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice in favour of LiteRT
        interp = tf.lite.Interpreter(
            model_content=data,
            num_threads=1,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    spec_in, spec_out = (TensorSpec(tuple(d["shape"]), np.dtype(d["dtype"]), *d["quantization"]) for d in (inp, out))
    xq = quantize_input(x, spec_in)
    probs, times = [], []
    for sample in xq:
        interp.set_tensor(inp["index"], sample[None, ...])
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
        probs.append(dequantize_output(interp.get_tensor(out["index"])[0], spec_out))
    return np.stack(probs), float(np.median(times) * 1e3)


def _tflm_outputs(model: TflmModel, x: np.ndarray) -> np.ndarray:
    xq = quantize_input(x, model.input)
    return np.stack([dequantize_output(model.invoke(xq[i : i + 1]), model.output).reshape(-1) for i in range(len(x))])


def _auc(y: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    from sklearn.metrics import roc_auc_score

    onehot = np.eye(n_classes)[y]
    per_class = [
        float(roc_auc_score(onehot[:, c], probs[:, c])) if 0 < onehot[:, c].sum() < len(y) else float("nan")
        for c in range(n_classes)
    ]
    return float(np.nanmean(per_class)), per_class


def evaluate(data: bytes, ds: Dataset, *, tflite_loadable: bool = True) -> Evaluation:
    """Measure one converted model on the data set's test split (tf.lite and TFLM)."""
    parsed = read_model(data)
    n_classes = len(ds.class_names)
    m: dict = {
        "size_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sparsity": parsed.sparsity(),
        "ops": parsed.op_set,
        "input_dtype": parsed.inputs[0].dtype,
        "output_dtype": parsed.outputs[0].dtype,
    }
    probs = None
    if tflite_loadable:
        probs, m["host_latency_ms"] = _tflite_outputs(data, ds.x_test)
        m["accuracy"] = float(np.mean(probs.argmax(1) == ds.y_test))
    else:
        m["host_latency_ms"] = float("nan")
        m["accuracy"] = float("nan")

    reason = tflm_error(data)
    probs_tflm = None
    m["tflm_ok"] = reason is None
    m["tflm_error"] = reason or ""
    if reason is None:
        try:
            arena = min_arena_bytes(data)
            runner = TflmModel(data, arena)
            m["arena_bytes"] = arena
            m["arena_reported_bytes"] = runner.arena_used_bytes
            m["arena_agree"] = arenas_agree(arena, runner.arena_used_bytes)
            probs_tflm = _tflm_outputs(runner, ds.x_test)
            m["accuracy_tflm"] = float(np.mean(probs_tflm.argmax(1) == ds.y_test))
        except TflmError as exc:
            m["tflm_ok"], m["tflm_error"] = False, str(exc)
    if not m["tflm_ok"]:
        m.update(arena_bytes=None, arena_reported_bytes=None, arena_agree=None, accuracy_tflm=float("nan"))

    scored = probs if probs is not None else probs_tflm
    if scored is not None:
        m["auc_macro"], m["auc_per_class"] = _auc(ds.y_test, scored, n_classes)
    else:
        m["auc_macro"], m["auc_per_class"] = float("nan"), [float("nan")] * n_classes
    if probs is not None and probs_tflm is not None:
        m["tflm_agreement_vs_tflite"] = float(np.mean(probs.argmax(1) == probs_tflm.argmax(1)))
    return Evaluation(m, probs, probs_tflm)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose top-1 class is the same in both output sets."""
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity between corresponding output vectors."""
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
