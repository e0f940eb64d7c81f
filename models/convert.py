"""Conversion modes (Keras model -> .tflite flatbuffer) and TFLM's own LUT weight compression."""

from __future__ import annotations

import math
import warnings

import numpy as np

from models.errors import ModelError
from models.tf import tensorflow
from models.tflite_file import read_model
from models.tflm import capture_fd2

MODES = ("no_opt", "dynamic", "float16", "int_fallback", "int8", "int8_lut")
# Modes whose models TFLM cannot run (hybrid / float16 dequantize): kept in the table as not deployable.
LUT_MAX_BITS = 7


def convert(model, mode: str, representative: np.ndarray | None = None) -> bytes:
    """Convert a Keras model with one of MODES; integer modes need representative float32 NHWC inputs."""
    if mode not in MODES:
        raise ModelError(f"unknown conversion mode {mode!r}; use one of {', '.join(MODES)}")
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "no_opt":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in ("int_fallback", "int8", "int8_lut"):
        if representative is None or len(representative) == 0:
            raise ModelError(f"mode {mode!r} needs representative data")

        def samples():
            for x in representative:
                yield [x[None, ...].astype(np.float32)]

        converter.representative_dataset = samples
    if mode in ("int8", "int8_lut"):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The converter prints calibration chatter on the C-level stderr; keep it for error messages only.
        result, log = capture_fd2(converter.convert)
    if isinstance(result, BaseException):
        detail = log.strip().splitlines()[-1] if log.strip() else ""
        raise ModelError(f"TFLite conversion in mode {mode!r} failed: {result} {detail}".strip()) from None
    data = result
    if mode == "int8_lut":
        data = lut_compress(data)
    return bytes(data)


def lut_plan(model: bytes) -> list[tuple[int, int]]:
    """(tensor index, index bit width) for every int8 weight tensor with at most 2^7 values per channel."""
    parsed = read_model(model)
    plan = []
    for tensor in parsed.weight_tensors():
        if tensor.dtype != "int8":
            continue
        values = parsed.constant(tensor).reshape(tensor.shape[0], -1)
        distinct = max(len(np.unique(row)) for row in values)
        bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        if bits <= LUT_MAX_BITS:
            plan.append((tensor.index, bits))
    return plan


def lut_compress(model: bytes) -> bytes:
    """Compress weight tensors with TFLM's LUT method (per channel); fails if no tensor qualifies."""
    from tflite_micro.tensorflow.lite.micro.compression import SpecBuilder, compress
    from tflite_micro.tensorflow.lite.micro.compression import spec as lut_spec

    plan = lut_plan(model)
    if not plan:
        raise ModelError(
            "LUT compression needs weight tensors with at most 128 distinct values per channel "
            "(cluster the weights first); this model has none"
        )
    builder = SpecBuilder()
    for index, bits in plan:
        builder.add_tensor(subgraph=0, tensor=index).with_lut(
            index_bitwidth=bits, mode=lut_spec.PerChannel(axis=0)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(compress(model, builder.build()))
