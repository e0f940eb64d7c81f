"""Latency and power model of the virtual ESP32-family boards, per chip and per kernel library.

An operator costs what it does: a fixed dispatch cost, plus cycles per multiply-accumulate (conv, depthwise,
dense, and sequence ops such as LSTM and SVDF counted by their matrix MACs), per output element of a MAC op
(requantisation), per pooling-window element, per element of element-wise and transcendental ops, and per
byte of data-movement ops. The per-work cycle counts (a "shape") come from esp-nn's published kernel-wise
tick counts; one scale per (chip, kernels, data type) places the shape on the chip, fitted to Espressif's
published `person_detect` invoke() times. Constants and their sources: `hil/sim/calibration.yaml`;
`python -m hil.sim.calibrate` re-derives the scales and prints the calibration table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hil.errors import HilError
from models.config_file import read_yaml_mapping

CALIBRATION_FILE = Path(__file__).with_name("calibration.yaml")
KERNELS = ("esp-nn", "reference")

CONV_OPS = frozenset({"CONV_2D", "TRANSPOSE_CONV", "CONV_3D"})
DEPTHWISE_OPS = frozenset({"DEPTHWISE_CONV_2D"})
DENSE_OPS = frozenset({"FULLY_CONNECTED", "BATCH_MATMUL"})
LSTM_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"})
RNN_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_RNN", "RNN", "BIDIRECTIONAL_SEQUENCE_RNN"})
SEQUENCE_OPS = LSTM_OPS | RNN_OPS | {"SVDF"}
MAC_OPS = CONV_OPS | DEPTHWISE_OPS | DENSE_OPS | SEQUENCE_OPS
POOL_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"})
BINARY_OPS = frozenset({"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "FLOOR_DIV",
                        "FLOOR_MOD", "POW", "ADD_N", "LESS", "GREATER", "EQUAL", "NOT_EQUAL"})  # fmt: skip
TRANSCENDENTAL_OPS = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX", "EXP", "LOG", "SQRT", "RSQRT",
                                "ELU", "GELU", "SIN", "COS"})  # fmt: skip
MOVE_OPS = frozenset({"CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "PACK",
                      "UNPACK", "SPLIT", "SPLIT_V", "GATHER", "GATHER_ND", "BROADCAST_TO", "RESHAPE", "SQUEEZE",
                      "EXPAND_DIMS", "RESIZE_NEAREST_NEIGHBOR", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
                      "TFLM_DECODE"})  # fmt: skip
FREE_OPS = frozenset({"SHAPE"})
REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"})


@dataclass(frozen=True)
class Layer:
    """What the cost model needs of one operator.

    `macs`: multiply-accumulates; `elements`: output elements (for sequence ops: gate elements over all steps;
    for reductions: input elements); `window`: pooling-window elements read; `bytes`: bytes a data-movement
    op copies.
    """

    op: str
    dtype: str  # "float32" or "int8" (the kernel family)
    macs: int = 0
    elements: int = 0
    window: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Shape:
    """Cycles per unit of work at scale 1.0 (one kernel implementation's relative costs)."""

    name: str
    mac: dict[str, float]  # conv, depthwise, dense, sequence
    output: float  # per output element of a MAC op
    pool: dict[str, float]  # max, avg
    binary: float
    unary: float
    transcendental: float
    move: float  # per byte

    def cycles(self, layer: Layer) -> float:
        """Cycles of `layer` at scale 1.0, without the fixed per-operator cost."""
        op = layer.op
        if op in MAC_OPS:
            kind = ("conv" if op in CONV_OPS else "depthwise" if op in DEPTHWISE_OPS
                    else "dense" if op in DENSE_OPS else "sequence")  # fmt: skip
            c = layer.macs * self.mac[kind]
            if op in SEQUENCE_OPS:
                return c + layer.elements * self.transcendental  # gate non-linearities, every step
            return c + layer.elements * self.output
        if op in POOL_OPS:
            return layer.window * self.pool["max" if op == "MAX_POOL_2D" else "avg"]
        if op in TRANSCENDENTAL_OPS:
            return layer.elements * self.transcendental
        if op in BINARY_OPS:
            return layer.elements * self.binary
        if op in MOVE_OPS:
            return layer.bytes * self.move
        if op in FREE_OPS:
            return 0.0
        return layer.elements * self.unary  # activations, (de)quantize, reductions, anything else per element


@dataclass(frozen=True)
class Kernels:
    """How one data type runs on one chip: a shape and the scale that places it on the chip."""

    shape: Shape
    scale: float


@dataclass(frozen=True)
class ChipProfile:
    """Everything the cost model knows about one (chip, kernel library) pair."""

    chip: str
    core: str
    kernels: str
    cpu_mhz: int
    invoke_overhead_cycles: float
    op_overhead_cycles: float
    by_dtype: dict[str, Kernels]
    jitter_rel_std: float
    supply_volts: float
    idle_current_a: float
    active_current_a: dict[str, float]
    inference_power_rel_std: float
    ripple_rel: float
    ripple_hz: float

    def layer_cycles(self, layer: Layer) -> float:
        """Modelled CPU cycles of one operator on this chip with this kernel library."""
        k = self.by_dtype[layer.dtype]
        return self.op_overhead_cycles + k.scale * k.shape.cycles(layer)


@dataclass(frozen=True)
class Calibration:
    """The constants of `calibration.yaml`: kernel shapes, chips, power, the published figures."""

    shapes: dict[str, Shape]
    chips: dict[str, dict[str, Any]]
    power: dict[str, Any]
    latency: dict[str, Any]
    published: list[dict[str, Any]]
    cross_checks: list[dict[str, Any]]
    source: Path

    @property
    def supply_volts(self) -> float:
        return float(self.power["supply_volts"])

    @property
    def idle_current_a(self) -> float:
        """The default chip's (ESP32) idle current."""
        return self.profile().idle_current_a

    def profile(self, chip: str = "esp32", kernels: str = "esp-nn") -> ChipProfile:
        """The cost and power constants of `chip` running `kernels` ("esp-nn" or "reference")."""
        if chip not in self.chips:
            raise HilError(f"the virtual board has no cost model for chip {chip!r}; modelled chips: "
                           f"{', '.join(self.chips)} (hil/sim/calibration.yaml)")
        if kernels not in KERNELS:
            raise HilError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        c = self.chips[chip]
        try:
            by_dtype = {
                "int8": self._kernels(c["kernels"][kernels]["int8"]),
                "float32": self._kernels(c["float32"]),  # ESP-NN has no float kernels: TFLM's reference ones
            }
            pw = c["power"]
            return ChipProfile(
                chip=chip,
                core=str(c["core"]),
                kernels=kernels,
                cpu_mhz=int(c["cpu_mhz"]),
                invoke_overhead_cycles=float(self.latency["invoke_overhead_cycles"]),
                op_overhead_cycles=float(self.latency["op_overhead_cycles"]),
                by_dtype=by_dtype,
                jitter_rel_std=float(self.latency["jitter_rel_std"]),
                supply_volts=self.supply_volts,
                idle_current_a=float(pw["idle_current_a"]),
                active_current_a={k: float(v) for k, v in pw["active_current_a"].items()},
                inference_power_rel_std=float(self.power["inference_power_rel_std"]),
                ripple_rel=float(self.power["ripple_rel"]),
                ripple_hz=float(self.power["ripple_hz"]),
            )
        except (KeyError, TypeError) as exc:
            raise HilError(f"{self.source}: chip {chip}: missing or malformed key {exc}") from None

    def _kernels(self, entry: dict[str, Any]) -> Kernels:
        name = entry["shape"]
        if name not in self.shapes:
            raise HilError(f"{self.source}: unknown kernel shape {name!r}; shapes: {', '.join(self.shapes)}")
        return Kernels(self.shapes[name], float(entry["scale"]))


def _shape(name: str, d: dict[str, Any]) -> Shape:
    return Shape(
        name=name,
        mac={k: float(d["mac"][k]) for k in ("conv", "depthwise", "dense", "sequence")},
        output=float(d["output"]),
        pool={k: float(d["pool"][k]) for k in ("max", "avg")},
        binary=float(d["binary"]),
        unary=float(d["unary"]),
        transcendental=float(d["transcendental"]),
        move=float(d["move"]),
    )


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """Read the calibration constants; a missing key is a HilError naming file and key."""
    doc = read_yaml_mapping(path, what="calibration file", hint="restore hil/sim/calibration.yaml", error=HilError)
    try:
        shapes = {name: _shape(name, d) for name, d in doc["shapes"].items()}
        cal = Calibration(
            shapes=shapes,
            chips=dict(doc["chips"]),
            power=dict(doc["power"]),
            latency=dict(doc["latency"]),
            published=list(doc["published"]),
            cross_checks=list(doc.get("cross_checks") or []),
            source=Path(path),
        )
        for chip in cal.chips:
            for kernels in KERNELS:
                cal.profile(chip, kernels)  # every chip complete, or one clear error now
    except (KeyError, TypeError) as exc:
        raise HilError(f"{path}: missing or malformed key {exc}; see the shipped calibration.yaml") from None
    return cal


def kernel_dtype(dtype: str) -> str:
    """The kernel family of a tensor dtype: integer kernels cost like int8, everything else like float32."""
    return "int8" if dtype in ("int8", "uint8", "int16", "int32") else "float32"


def _prod(shape: tuple[int, ...] | list[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def _sequence_work(op: Any, ins: list[Any]) -> tuple[int, int]:
    """(MACs, gate elements) of one invoke of an LSTM, RNN or SVDF operator."""
    x = op.inputs[0]
    if op.op == "SVDF" and len(op.inputs) > 2 and op.inputs[1] is not None and op.inputs[2] is not None:
        filters, n_in = op.inputs[1].shape[0], op.inputs[1].shape[-1]
        memory = op.inputs[2].shape[-1]
        return filters * n_in + filters * memory, _prod(op.outputs[0].shape) if op.outputs else 0
    shape = list(x.shape) if x is not None else []
    steps = 1
    if len(shape) == 3:
        time_major = bool(op.options.get("timeMajor", False))
        steps = shape[0] if time_major else shape[1]
    weights = [t for t in op.inputs[1:] if t is not None and t.is_constant and len(t.shape) == 2]
    per_step = sum(_prod(t.shape) for t in weights)
    units = weights[0].shape[0] if weights else 0
    gates = 4 if op.op in LSTM_OPS else 1
    return steps * per_step, steps * units * gates


def layers_from_model(model: Any) -> list[Layer]:
    """Layers of a parsed model (`models.tflite_file.TfliteModel`), in execution order."""
    layers = []
    for op in model.operators:
        ins = [t for t in op.inputs if t is not None]
        act = ins[0] if ins else (op.outputs[0] if op.outputs else None)
        dtype = kernel_dtype(act.dtype if act is not None else "float32")
        if op.op in ("QUANTIZE", "DEQUANTIZE") and op.outputs:
            dtype = "int8"  # integer arithmetic either way
        out = _prod(op.outputs[0].shape) if op.outputs else 0
        macs = window = nbytes = 0
        elements = out
        w = ins[1] if len(ins) > 1 else None
        if op.op in CONV_OPS and w is not None and len(w.shape) >= 4:
            macs = out * _prod(w.shape[1:])  # filter [out_c, kh, kw, in_c]
        elif op.op in DEPTHWISE_OPS and w is not None and len(w.shape) >= 4:
            macs = out * w.shape[1] * w.shape[2]  # filter [1, kh, kw, out_c]
        elif op.op in DENSE_OPS and w is not None and len(w.shape) >= 2:
            macs = out * w.shape[-1]  # weights [units, in_features]
        elif op.op in SEQUENCE_OPS and ins:
            macs, elements = _sequence_work(op, ins)
        elif op.op in POOL_OPS:
            kh = int(op.options.get("filterHeight", 2) or 2)
            kw = int(op.options.get("filterWidth", 2) or 2)
            window = out * kh * kw
        elif op.op in MOVE_OPS:
            nbytes = sum(t.bytes for t in op.outputs)
        elif op.op in REDUCE_OPS and act is not None:
            elements = _prod(act.shape)
        layers.append(Layer(op.op, dtype, macs, elements, window, nbytes))
    return layers


@dataclass(frozen=True)
class CostModel:
    """Per-operator times (seconds, at the CPU clock) and the supply current drawn by each operator."""

    layers: tuple[Layer, ...]
    op_seconds: tuple[float, ...]
    invoke_overhead_s: float
    cpu_mhz: int
    idle_current_a: float
    op_current_a: tuple[float, ...]
    jitter_rel_std: float
    profile: ChipProfile

    @classmethod
    def build(cls, layers: list[Layer], profile: ChipProfile | None = None, cpu_mhz: int | None = None) -> CostModel:
        """Cost of each layer on `profile` (default: ESP32 with ESP-NN) at `cpu_mhz` (default: the chip's)."""
        profile = profile or load_calibration().profile()
        mhz = cpu_mhz or profile.cpu_mhz
        hz = mhz * 1e6
        return cls(
            layers=tuple(layers),
            op_seconds=tuple(profile.layer_cycles(layer) / hz for layer in layers),
            invoke_overhead_s=profile.invoke_overhead_cycles / hz,
            cpu_mhz=mhz,
            idle_current_a=profile.idle_current_a,
            op_current_a=tuple(profile.idle_current_a + profile.active_current_a[layer.dtype] for layer in layers),
            jitter_rel_std=profile.jitter_rel_std,
            profile=profile,
        )

    @property
    def latency_s(self) -> float:
        """Noise-free duration of one Invoke()."""
        return self.invoke_overhead_s + sum(self.op_seconds)

    @property
    def active_current_a(self) -> float:
        """Time-weighted supply current during one Invoke() (the overhead runs at the first op's current)."""
        if not self.layers:
            return self.idle_current_a
        charge = sum(t * i for t, i in zip(self.op_seconds, self.op_current_a, strict=True))
        charge += self.invoke_overhead_s * self.op_current_a[0]
        return charge / self.latency_s


def study_cnn_layers(dtype: str, filters: tuple[int, ...] = (8, 16, 32), dense: tuple[int, ...] = (16, 16, 10)
                     ) -> list[Layer]:  # fmt: skip
    """A CNN of the reference study's described size (3 x Conv3x3-BN-ReLU-MaxPool, 3 Dense, 32x32x1).

    The study gives ~15 k parameters (59.5 KB float file), not the filter counts: (8, 16, 32) filters and
    dense (16, 16, 10) make 14.8 k parameters; an assumption used only for the cross-check.
    """
    layers: list[Layer] = []
    h, c = 32, 1
    for f in filters:
        layers.append(Layer("CONV_2D", dtype, macs=h * h * f * 9 * c, elements=h * h * f))
        h //= 2
        layers.append(Layer("MAX_POOL_2D", dtype, elements=h * h * f, window=h * h * f * 4))
        c = f
    n_in = h * h * c
    layers.append(Layer("RESHAPE", dtype, elements=n_in, bytes=n_in * (1 if dtype == "int8" else 4)))
    for units in dense:
        layers.append(Layer("FULLY_CONNECTED", dtype, macs=n_in * units, elements=units))
        n_in = units
    layers.append(Layer("SOFTMAX", dtype, elements=n_in))
    return layers


def study_cnn_parameters(filters: tuple[int, ...] = (8, 16, 32), dense: tuple[int, ...] = (16, 16, 10)) -> int:
    """Trainable parameters of `study_cnn_layers` (BN folded: conv and dense weights and biases)."""
    n, c = 0, 1
    for f in filters:
        n += 9 * c * f + f
        c = f
    n_in = 4 * 4 * c
    for units in dense:
        n += n_in * units + units
        n_in = units
    return n
