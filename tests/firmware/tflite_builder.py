"""Small TFLite flatbuffers for the operator check, written with the TFLite schema's own Python object API
(tflite_micro's schema_py_generated.py, loaded by path so TensorFlow is not imported)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PY = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/tensorflow/lite/micro/python/schema_py_generated.py"
CUSTOM = 32  # BuiltinOperator.CUSTOM


@cache
def schema():
    spec = importlib.util.spec_from_file_location("hil_tflite_schema", SCHEMA_PY)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def builtin(name: str) -> int:
    return getattr(schema().BuiltinOperator, name)


def model_with_ops(ops: list[str | tuple[int, int, str | None]],
                   io: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> bytes:
    """A model whose subgraph 0 runs `ops` in order: a builtin name ("CONV_2D"), a custom code
    ("custom:TFLM_DECODE"), or a raw (builtin_code, deprecated_builtin_code, custom_code) triple. With `io`
    (input shape, output shape) it declares one int8 input and one int8 output tensor of those shapes."""
    import flatbuffers

    s = schema()
    codes: list[tuple[int, int, str | None]] = []
    order = []
    for op in ops:
        if isinstance(op, tuple):
            key = op
        elif op.startswith("custom:"):
            key = (CUSTOM, CUSTOM, op.split(":", 1)[1])
        else:
            code = builtin(op)
            key = (code, min(code, 127), None)  # the schema's rule: deprecated code saturates at 127
        if key not in codes:
            codes.append(key)
        order.append(codes.index(key))
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = []
    for code, deprecated, custom in codes:
        oc = s.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = deprecated
        oc.customCode = custom
        oc.version = 1
        model.operatorCodes.append(oc)
    sub = s.SubGraphT()
    sub.tensors = []
    sub.inputs, sub.outputs = [], []
    for shape in io or ():
        tensor = s.TensorT()
        tensor.shape, tensor.type, tensor.buffer = list(shape), s.TensorType.INT8, 0
        sub.tensors.append(tensor)
    if io:
        sub.inputs, sub.outputs = [0], [1]
    sub.operators = []
    for index in order:
        op = s.OperatorT()
        op.opcodeIndex = index
        op.inputs, op.outputs = [], []
        sub.operators.append(op)
    model.subgraphs = [sub]
    model.buffers = [s.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def reshape_model(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> bytes:
    """A runnable int8 model: one RESHAPE from `input_shape` to `output_shape` (same element count), both tensors
    quantized with scale 1/256 and zero point -128, so TFLM runs it and its output is its input, dequantized."""
    import flatbuffers

    s = schema()
    model = s.ModelT()
    model.version = 3
    oc = s.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = builtin("RESHAPE")
    oc.version = 1
    model.operatorCodes = [oc]
    sub = s.SubGraphT()
    sub.tensors = []
    for i, shape in enumerate((input_shape, output_shape)):
        tensor = s.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = list(shape), s.TensorType.INT8, 0, f"t{i}"
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [1 / 256], [-128]
        tensor.quantization = q
        sub.tensors.append(tensor)
    sub.inputs, sub.outputs = [0], [1]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
    options = s.ReshapeOptionsT()
    options.newShape = list(output_shape)
    op.builtinOptions = options
    sub.operators = [op]
    model.subgraphs = [sub]
    model.buffers = [s.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
