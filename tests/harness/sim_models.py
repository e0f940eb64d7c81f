"""Models the firmware must refuse, made from the TFLM sine model with the TFLite schema's object API.

`with_exp(model)`: the same model with an EXP operator appended to its output (EXP is not in
firmware/main/ops.txt); `with_ballast(model, nbytes)`: the same model carrying an unused constant tensor of
`nbytes` bytes (a model too large for the 1 MB model partition).
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from models.tflite_file import _schema


def _load(model: bytes):
    s = _schema()
    return s, s.ModelT.InitFromPackedBuf(bytearray(model), 0)


def _pack(s, m) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def with_exp(model: bytes) -> bytes:
    s, m = _load(model)
    code = s.OperatorCodeT()
    code.builtinCode = s.BuiltinOperator.EXP
    code.deprecatedBuiltinCode = s.BuiltinOperator.EXP
    code.version = 1
    m.operatorCodes.append(code)
    g = m.subgraphs[0]
    out = g.tensors[g.outputs[0]]
    t = s.TensorT()
    t.shape, t.type, t.name = list(out.shape), out.type, b"exp_out"
    t.buffer = len(m.buffers)
    m.buffers.append(s.BufferT())
    g.tensors.append(t)
    op = s.OperatorT()
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.inputs, op.outputs = [int(g.outputs[0])], [len(g.tensors) - 1]
    g.operators.append(op)
    g.outputs = [len(g.tensors) - 1]
    return _pack(s, m)


def with_ballast(model: bytes, nbytes: int) -> bytes:
    s, m = _load(model)
    buf = s.BufferT()
    buf.data = np.arange(nbytes, dtype=np.uint8)
    m.buffers.append(buf)
    g = m.subgraphs[0]
    t = s.TensorT()
    t.shape, t.type, t.name, t.buffer = [nbytes], s.TensorType.INT8, b"ballast", len(m.buffers) - 1
    g.tensors.append(t)
    return _pack(s, m)
