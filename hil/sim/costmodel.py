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
    """What the cost model needs of one operator: its work and the shape facts that pick the kernel's code path.

    `macs`: multiply-accumulates as the layer is usually counted (every filter tap, padding included);
    `elements`: output elements (sequence ops: gate elements over all steps; reductions: input elements);
    `window`: pooling-window elements read inside the input; `bytes`: bytes a data-movement op copies.
    Shape facts of conv, depthwise and dense ops: `in_ch`, `out_ch` (output channels), `kh`, `kw`, `pixels`
    (output pixels), `stride`, `multiplier` (depthwise), `taps` (output pixel x filter tap pairs inside the
    input: what the kernels loop over; 0 means pixels x kh x kw).
    """

    op: str
    dtype: str  # "float32" or "int8" (the kernel family)
    macs: int = 0
    elements: int = 0
    window: int = 0
    bytes: int = 0
    in_ch: int = 0
    out_ch: int = 0
    kh: int = 1
    kw: int = 1
    pixels: int = 0
    stride: int = 1
    multiplier: int = 1
    taps: int = 0
    in_pixels: int = 0

    @property
    def valid_taps(self) -> int:
        """Output pixel x filter tap pairs the kernel computes (taps outside a padded input are skipped)."""
        return self.taps or self.pixels * self.kh * self.kw


def _lane_factor(n: int, lanes: int) -> float:
    """Work of a vector loop over `n` items on `lanes`-wide vectors, relative to `n` (1.0: no idle lane)."""
    if lanes <= 1 or n <= 0:
        return 1.0
    return math.ceil(n / lanes) * lanes / n


@dataclass(frozen=True)
class Shape:
    """Cycles per unit of work of one kernel implementation at scale 1.0 (ESP32-S3 ticks for esp-nn's shapes).

    `conv`: per output element, per (output element x filter tap), per MAC; `depthwise`, `dense`: per output
    element, per MAC; `pool`: per window element; `add`, `mul`, `unary`, `transcendental`: per element;
    `move`: per byte. A vector implementation (`lanes` > 1) runs a conv/depthwise layer on its SIMD path only
    when the channel counts fit the path (esp-nn's dispatch, see `vector_path`), pays idle lanes, and otherwise
    runs its scalar C code: `fallback` cycles divided by `fallback_speedup`.
    """

    name: str
    conv: dict[str, float]
    depthwise: dict[str, float]
    dense: dict[str, float]
    pool: dict[str, float]
    add: float
    mul: float
    unary: float
    transcendental: float
    move: float
    sequence_mac: float
    lanes: int = 1
    fallback: Shape | None = None
    fallback_speedup: float = 1.0

    def vector_path(self, layer: Layer) -> bool:
        """Whether esp-nn 13d77d1's ESP32-S3 dispatch runs `layer` on a SIMD path (else scalar C).

        conv: input channels a multiple of 8, or a 1x1 stride-1 conv with channels a multiple of 4 over a
        multiple of 16 pixels; depthwise: multiplier 1 with channels a multiple of 8, or a multiplier that is a
        multiple of 4. Layers without shape facts (in_ch 0) count as vectorisable.
        """
        if self.lanes <= 1:
            return False
        if layer.in_ch <= 0:
            return True
        if layer.op in DEPTHWISE_OPS:
            return (layer.multiplier == 1 and layer.in_ch % 8 == 0) or layer.multiplier % 4 == 0
        if layer.in_ch % 8 == 0:
            return True
        one_by_one = layer.kh == layer.kw == 1 and layer.stride == 1 and layer.taps in (0, layer.pixels)
        return one_by_one and layer.in_ch % 4 == 0 and layer.pixels % 16 == 0

    def _mac_op(self, layer: Layer) -> float:
        op = layer.op
        shaped = layer.in_ch > 0
        if op in CONV_OPS:
            c = self.conv
            if shaped:
                pairs = layer.valid_taps * layer.out_ch  # output element x tap
                outputs, macs = layer.pixels * layer.out_ch, pairs * layer.in_ch
            else:
                pairs, outputs, macs = layer.elements, layer.elements, layer.macs
            lane = _lane_factor(layer.in_ch, self.lanes) if shaped else 1.0
            return outputs * c["output"] + pairs * c["tap"] + macs * c["mac"] * lane
        if op in DEPTHWISE_OPS:
            d = self.depthwise
            if shaped:
                outputs = layer.pixels * layer.in_ch * layer.multiplier
                macs = layer.valid_taps * layer.in_ch * layer.multiplier
                n = layer.in_ch if layer.multiplier == 1 else layer.multiplier
                lane = _lane_factor(n, self.lanes)
            else:
                outputs, macs, lane = layer.elements, layer.macs, 1.0
            return outputs * d["output"] + macs * d["mac"] * lane
        if op in DENSE_OPS:
            return layer.elements * self.dense["output"] + layer.macs * self.dense["mac"]
        return layer.macs * self.sequence_mac + layer.elements * self.transcendental  # LSTM/RNN/SVDF

    def cycles(self, layer: Layer) -> float:
        """Cycles of `layer` at scale 1.0, without the fixed per-operator cost."""
        op = layer.op
        if op in CONV_OPS | DEPTHWISE_OPS and self.lanes > 1 and not self.vector_path(layer):
            assert self.fallback is not None, f"shape {self.name}: a vector shape needs a fallback"
            return self.fallback.cycles(layer) / self.fallback_speedup
        if op in MAC_OPS:
            return self._mac_op(layer)
        if op in POOL_OPS:
            return layer.window * self.pool["max" if op == "MAX_POOL_2D" else "avg"]
        if op in TRANSCENDENTAL_OPS:
            return layer.elements * self.transcendental
        if op in BINARY_OPS:
            per = self.add if op in ("ADD", "SUB") else self.mul if op == "MUL" else (self.add + self.mul) / 2
            return layer.elements * per
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


def _shape(name: str, d: dict[str, Any], shapes: dict[str, Shape]) -> Shape:
    fallback = d.get("fallback")
    if fallback is not None and fallback not in shapes:
        raise HilError(f"shape {name}: fallback {fallback!r} must be defined before it")
    return Shape(
        name=name,
        conv={k: float(d["conv"][k]) for k in ("output", "tap", "mac")},
        depthwise={k: float(d["depthwise"][k]) for k in ("output", "mac")},
        dense={k: float(d["dense"][k]) for k in ("output", "mac")},
        pool={k: float(d["pool"][k]) for k in ("max", "avg")},
        add=float(d["add"]),
        mul=float(d["mul"]),
        unary=float(d["unary"]),
        transcendental=float(d["transcendental"]),
        move=float(d["move"]),
        sequence_mac=float(d["sequence_mac"]),
        lanes=int(d.get("lanes", 1)),
        fallback=shapes[fallback] if fallback is not None else None,
        fallback_speedup=float(d.get("fallback_speedup", 1.0)),
    )


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """Read the calibration constants; a missing key is a HilError naming file and key."""
    doc = read_yaml_mapping(path, what="calibration file", hint="restore hil/sim/calibration.yaml", error=HilError)
    try:
        shapes: dict[str, Shape] = {}
        for name, d in doc["shapes"].items():
            shapes[name] = _shape(name, d, shapes)
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


def same_pad(in_size: int, k: int, stride: int, out_size: int) -> int:
    """Leading padding of TFLite's SAME padding (the extra row/column, if any, goes to the end)."""
    return max((out_size - 1) * stride + k - in_size, 0) // 2


def valid_taps_1d(in_size: int, k: int, stride: int, out_size: int, pad: int) -> int:
    """Filter taps inside the input summed over the output positions of one dimension."""
    total = 0
    for o in range(out_size):
        start = o * stride - pad
        total += max(0, min(k, in_size - start) - max(0, -start))
    return total


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return (int(shape[1]), int(shape[2])) if len(shape) == 4 else (1, 1)


def _spatial(op: Any, x: Any, kh: int, kw: int) -> dict[str, int]:
    """Shape facts of a 2-D windowed op: output pixels, stride, valid taps (TFLite SAME/VALID padding)."""
    out = op.outputs[0].shape
    (ih, iw), (oh, ow) = _hw(tuple(x.shape)), _hw(tuple(out))
    sh, sw = int(op.options.get("strideH", 1) or 1), int(op.options.get("strideW", 1) or 1)
    same = int(op.options.get("padding", 0) or 0) == 0  # TFLite Padding: SAME = 0, VALID = 1
    ph = same_pad(ih, kh, sh, oh) if same else 0
    pw = same_pad(iw, kw, sw, ow) if same else 0
    taps = valid_taps_1d(ih, kh, sh, oh, ph) * valid_taps_1d(iw, kw, sw, ow, pw)
    return {"pixels": oh * ow, "stride": max(sh, sw), "taps": taps, "in_pixels": ih * iw}


def layers_from_model(model: Any) -> list[Layer]:
    """Layers of a parsed model (`models.tflite_file.TfliteModel`), in execution order, with their shape facts."""
    layers = []
    for op in model.operators:
        ins = [t for t in op.inputs if t is not None]
        act = ins[0] if ins else (op.outputs[0] if op.outputs else None)
        dtype = kernel_dtype(act.dtype if act is not None else "float32")
        if op.op in ("QUANTIZE", "DEQUANTIZE") and op.outputs:
            dtype = "int8"  # integer arithmetic either way
        out = _prod(op.outputs[0].shape) if op.outputs else 0
        w = ins[1] if len(ins) > 1 else None
        facts: dict[str, int] = {}
        macs = window = nbytes = 0
        elements = out
        spatial = act is not None and op.outputs and len(act.shape) == 4 and len(op.outputs[0].shape) == 4
        if op.op in CONV_OPS and w is not None and len(w.shape) >= 4:
            macs = out * _prod(w.shape[1:])  # filter [out_c, kh, kw, in_c]
            kh, kw = int(w.shape[1]), int(w.shape[2])
            facts = {"in_ch": int(w.shape[-1]), "out_ch": int(w.shape[0]), "kh": kh, "kw": kw}
            if op.op == "CONV_2D" and spatial:
                facts |= _spatial(op, act, kh, kw)
            else:
                facts = {}  # transpose/3-D conv: priced by MACs alone
        elif op.op in DEPTHWISE_OPS and w is not None and len(w.shape) >= 4:
            macs = out * w.shape[1] * w.shape[2]  # filter [1, kh, kw, out_c]
            kh, kw = int(w.shape[1]), int(w.shape[2])
            mult = int(op.options.get("depthMultiplier", 1) or 1)
            in_ch = int(act.shape[-1]) if act is not None else int(w.shape[-1]) // mult
            facts = {"in_ch": in_ch, "out_ch": in_ch * mult, "kh": kh, "kw": kw, "multiplier": mult}
            if spatial:
                facts |= _spatial(op, act, kh, kw)
            else:
                facts = {}
        elif op.op in DENSE_OPS and w is not None and len(w.shape) >= 2:
            macs = out * w.shape[-1]  # weights [units, in_features]
            facts = {"in_ch": int(w.shape[-1]), "out_ch": int(w.shape[0])}
        elif op.op in SEQUENCE_OPS and ins:
            macs, elements = _sequence_work(op, ins)
        elif op.op in POOL_OPS:
            kh = int(op.options.get("filterHeight", 2) or 2)
            kw = int(op.options.get("filterWidth", 2) or 2)
            if spatial:
                s = _spatial(op, act, kh, kw)
                window = s["taps"] * int(op.outputs[0].shape[-1])  # window elements inside the input
            else:
                window = out * kh * kw
        elif op.op in MOVE_OPS:
            nbytes = sum(t.bytes for t in op.outputs)
        elif op.op in REDUCE_OPS and act is not None:
            elements = _prod(act.shape)
        layers.append(Layer(op.op, dtype, macs, elements, window, nbytes, **facts))
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

    The study gives ~15 k parameters (59.5 KB float file), not the filter counts: (8, 16, 32) filters ('same'
    padding, BN folded) and dense (16, 16, 10) make 14.8 k parameters; an assumption used only for the cross-check.
    """
    layers: list[Layer] = []
    h, c = 32, 1
    for f in filters:
        taps = valid_taps_1d(h, 3, 1, h, same_pad(h, 3, 1, h)) ** 2
        layers.append(Layer("CONV_2D", dtype, macs=h * h * f * 9 * c, elements=h * h * f, in_ch=c, out_ch=f,
                            kh=3, kw=3, pixels=h * h, taps=taps, in_pixels=h * h))  # fmt: skip
        h //= 2
        layers.append(Layer("MAX_POOL_2D", dtype, elements=h * h * f, window=h * h * f * 4))
        c = f
    n_in = h * h * c
    layers.append(Layer("RESHAPE", dtype, elements=n_in, bytes=n_in * (1 if dtype == "int8" else 4)))
    for units in dense:
        layers.append(Layer("FULLY_CONNECTED", dtype, macs=n_in * units, elements=units, in_ch=n_in, out_ch=units))
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
