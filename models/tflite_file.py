"""Read a .tflite flatbuffer without TensorFlow: operators, tensors, quantization and constant weights.

Uses the schema module shipped in the tflite-micro wheel, so `hil` (virtual board, firmware checks)
can inspect any model without importing TensorFlow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from models.errors import ModelError

_DTYPES = {
    0: ("float32", np.float32),
    1: ("float16", np.float16),
    2: ("int32", np.int32),
    3: ("uint8", np.uint8),
    4: ("int64", np.int64),
    6: ("bool", np.bool_),
    7: ("int16", np.int16),
    9: ("int8", np.int8),
    10: ("float64", np.float64),
    12: ("uint64", np.uint64),
    15: ("uint32", np.uint32),
    16: ("uint16", np.uint16),
}

# Operators whose input 1 is a weight tensor (filter), for sparsity and weight statistics.
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


@cache
def _builtin_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {value: name for name, value in vars(ops).items() if name.isupper() and isinstance(value, int)}


@cache
def _tensor_types() -> frozenset[int]:
    types = _schema().TensorType
    return frozenset(v for k, v in vars(types).items() if k.isupper() and isinstance(v, int))


def _name(t) -> str:
    return t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of subgraph 0: shape, data type, quantization and whether it is a constant."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    bytes: int
    is_constant: bool

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class Operator:
    """One operator in execution order with its input/output tensors and builtin options."""

    index: int
    op: str
    inputs: tuple[TensorInfo | None, ...]
    outputs: tuple[TensorInfo, ...]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TfliteModel:
    """A parsed .tflite model (subgraph 0)."""

    size_bytes: int
    version: int
    description: str
    operators: tuple[Operator, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: tuple[str, ...]
    _constants: dict[int, np.ndarray] = field(repr=False, compare=False)
    source: str = "model"
    _damaged: dict[int, str] = field(default_factory=dict, repr=False, compare=False)  # tensor -> what is wrong

    @property
    def ops(self) -> list[str]:
        """Operator names in execution order."""
        return [o.op for o in self.operators]

    @property
    def op_set(self) -> list[str]:
        """Distinct operator names, sorted."""
        return sorted(set(self.ops))

    def constant(self, tensor: TensorInfo) -> np.ndarray:
        """The stored values of a constant tensor, in its own dtype and shape."""
        if tensor.index in self._damaged:
            raise ModelError(f"{self.source}: corrupt TFLite model: {self._damaged[tensor.index]}; the file is "
                             "damaged, export or download it again")
        if tensor.index not in self._constants:
            raise ModelError(f"{self.source}: tensor {tensor.index} {tensor.name!r} ({tensor.dtype}) holds no "
                             "constant data this reader can decode")
        return self._constants[tensor.index]

    def weight_tensors(self) -> list[TensorInfo]:
        """Constant weight (filter) tensors of conv and fully connected layers."""
        found: dict[int, TensorInfo] = {}
        for o in self.operators:
            if (
                o.op in WEIGHT_OPS
                and len(o.inputs) > 1
                and o.inputs[1] is not None
                and o.inputs[1].is_constant
            ):
                found[o.inputs[1].index] = o.inputs[1]
        return list(found.values())

    def sparsity(self) -> float:
        """Fraction of exactly-zero values over all weight tensors (0.0 when there are none)."""
        arrays = [self.constant(t) for t in self.weight_tensors()]
        total = sum(a.size for a in arrays)
        if total == 0:
            return 0.0
        return float(sum(int(np.count_nonzero(a == 0)) for a in arrays) / total)


def _tensor_info(index: int, t, buffers, model_bytes: bytes, constants: dict[int, np.ndarray],
                 damaged: dict[int, str] | None = None) -> TensorInfo:
    dtype_name, np_dtype = _DTYPES.get(t.type, (f"type{t.type}", None))
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    q = t.quantization
    scales = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else []))
    zps = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else []))
    buf = buffers[t.buffer] if buffers is not None and t.buffer < len(buffers) else None
    data = None
    if buf is not None:
        if buf.data is not None and len(buf.data) > 0:
            data = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif getattr(buf, "offset", 0) > 1 and getattr(buf, "size", 0) > 0:
            data = model_bytes[buf.offset : buf.offset + buf.size]
    if data is not None and np_dtype is not None:
        arr = np.frombuffer(data, dtype=np_dtype)
        if arr.size == int(np.prod(shape)) if shape else arr.size == 1:
            constants[index] = arr.reshape(shape)
        elif damaged is not None:
            name = _name(t)
            need = (int(np.prod(shape)) if shape else 1) * np.dtype(np_dtype).itemsize
            damaged[index] = (f"tensor {index} {name!r} ({dtype_name}, shape {list(shape)}) needs {need} bytes "
                              f"of data, its buffer holds {len(data)}")
    elif data is not None and damaged is not None and t.type not in _tensor_types():
        damaged[index] = f"tensor {index} {_name(t)!r} has data type code {t.type}, which TFLite does not define"
    itemsize = np.dtype(np_dtype).itemsize if np_dtype is not None else 0
    n = int(np.prod(shape)) if shape else 1
    return TensorInfo(
        index=index,
        name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
        shape=shape,
        dtype=dtype_name,
        scale=scales[0] if scales else 0.0,
        zero_point=zps[0] if zps else 0,
        scales=scales,
        zero_points=zps,
        bytes=n * itemsize,
        is_constant=data is not None,
    )


def _options(op) -> dict:
    opts = op.builtinOptions
    if opts is None:
        return {}
    return {k: v for k, v in vars(opts).items() if isinstance(v, int | float | bool)}


def read_model(data: bytes, *, source: str = "model") -> TfliteModel:
    """Parse a .tflite flatbuffer; raise ModelError naming `source` if it is not a valid TFLite model."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(
            f"{source}: not a TFLite flatbuffer (missing 'TFL3' identifier); pass a .tflite file"
        )
    schema = _schema()
    stage = "the model table"
    try:
        root = schema.Model.GetRootAs(data, 0)
        model = schema.ModelT.InitFromObj(root)
        stage = "subgraph 0"
        sub = model.subgraphs[0]
        codes = model.operatorCodes or []
        names = _builtin_names()
        constants: dict[int, np.ndarray] = {}
        damaged: dict[int, str] = {}
        stage = "the tensors of subgraph 0"
        tensors = tuple(
            _tensor_info(i, t, model.buffers, data, constants, damaged) for i, t in enumerate(sub.tensors or [])
        )
        # the one structural check inspect, pack-model and the (virtual) board share: a constant whose buffer does
        # not hold its shape's bytes (a corrupt length) is refused here, not when a reader happens to need it
        broken = [i for i in damaged if sub.tensors[i].sparsity is None]  # a sparse tensor stores fewer values
        if broken:
            raise ModelError(f"{source}: corrupt TFLite model: {damaged[broken[0]]}; the file is damaged, export or "
                             "download it again")
        stage = "the operators of subgraph 0"
        operators = []
        for i, op in enumerate(sub.operators or []):
            stage = f"operator {i} of subgraph 0"
            code = codes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = (
                    code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
                )
            else:
                name = names.get(builtin, f"BUILTIN_{builtin}")
            ins = tuple(tensors[j] if j >= 0 else None for j in (op.inputs if op.inputs is not None else []))
            outs = tuple(tensors[j] for j in (op.outputs if op.outputs is not None else []))
            operators.append(Operator(i, name, ins, outs, _options(op)))
        metadata = tuple(
            (m.name.decode() if isinstance(m.name, bytes) else str(m.name)) for m in (model.metadata or [])
        )
        description = model.description.decode() if isinstance(model.description, bytes) else ""
        stage = "the inputs and outputs of subgraph 0"
        return TfliteModel(
            size_bytes=len(data),
            version=int(model.version),
            description=description,
            operators=tuple(operators),
            tensors=tensors,
            inputs=tuple(tensors[j] for j in sub.inputs),
            outputs=tuple(tensors[j] for j in sub.outputs),
            metadata=metadata,
            _constants=constants,
            source=source,
            _damaged=damaged,
        )
    except ModelError:
        raise
    except Exception as exc:  # a corrupt flatbuffer fails in many ways inside the generated reader
        raise ModelError(f"{source}: corrupt TFLite flatbuffer: {_corruption(exc, len(data))} in {stage}; "
                         "the file is damaged, export or download it again") from None


def _corruption(exc: Exception, size: int) -> str:
    """What a reader exception means in flatbuffer terms (the generated reader speaks Python)."""
    if isinstance(exc, struct.error | IndexError | OverflowError | MemoryError):
        return f"an offset, length or index points outside the {size}-byte file or its tables"
    if isinstance(exc, TypeError | AttributeError):
        return "a required table or vector is missing"
    if isinstance(exc, UnicodeDecodeError):
        return "a name is not UTF-8 text"
    return "a field holds an impossible value"


def read_model_file(path: str | Path) -> TfliteModel:
    """Read and parse a .tflite file; a missing file or a non-TFLite file is a ModelError naming the path."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such file; pass the path of a .tflite model")
    return read_model(p.read_bytes(), source=str(p))
