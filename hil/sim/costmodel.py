"""Latency and power model of the virtual ESP32: per-operator cycles from op type, data type and MAC count.

Constants and their sources live in `hil/sim/calibration.yaml`; the reference CNN reproduces the reference
ESP32 measurements with them.
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

CONV_OPS = frozenset({"CONV_2D", "TRANSPOSE_CONV", "CONV_3D"})
DEPTHWISE_OPS = frozenset({"DEPTHWISE_CONV_2D"})
DENSE_OPS = frozenset({"FULLY_CONNECTED", "BATCH_MATMUL"})
POOL_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"})
TRANSCENDENTAL_OPS = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX", "EXP", "HARD_SWISH"})
FREE_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})  # no data movement in TFLM


@dataclass(frozen=True)
class Layer:
    """What the cost model needs of one operator: name, kernel data type, MACs and elements touched."""

    op: str
    dtype: str  # "float32" or "int8" (the kernel family)
    macs: int = 0
    elements: int = 0


@dataclass(frozen=True)
class Calibration:
    """The constants of `calibration.yaml`."""

    cpu_mhz: int
    invoke_overhead_cycles: float
    op_overhead_cycles: float
    mac_cycles: dict[str, float]
    depthwise_factor: float
    pool_cycles: dict[str, float]
    elementwise_cycles: dict[str, float]
    transcendental_cycles: dict[str, float]
    jitter_rel_std: float
    supply_volts: float
    idle_current_a: float
    active_current_a: dict[str, float]
    reference: dict[str, Any]


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """Read the calibration constants; a missing key is a HilError naming file and key."""
    doc = read_yaml_mapping(path, what="calibration file", hint="restore hil/sim/calibration.yaml", error=HilError)
    try:
        lat, pw = doc["latency"], doc["power"]
        return Calibration(
            cpu_mhz=int(lat["cpu_mhz"]),
            invoke_overhead_cycles=float(lat["invoke_overhead_cycles"]),
            op_overhead_cycles=float(lat["op_overhead_cycles"]),
            mac_cycles=dict(lat["mac_cycles"]),
            depthwise_factor=float(lat["depthwise_factor"]),
            pool_cycles=dict(lat["pool_cycles"]),
            elementwise_cycles=dict(lat["elementwise_cycles"]),
            transcendental_cycles=dict(lat["transcendental_cycles"]),
            jitter_rel_std=float(lat["jitter_rel_std"]),
            supply_volts=float(pw["supply_volts"]),
            idle_current_a=float(pw["idle_current_a"]),
            active_current_a=dict(pw["active_current_a"]),
            reference=dict(doc["reference"]),
        )
    except (KeyError, TypeError) as exc:
        raise HilError(f"{path}: missing or malformed key {exc}; see the shipped calibration.yaml") from None


def kernel_dtype(dtype: str) -> str:
    """The kernel family of a tensor dtype: integer kernels cost like int8, everything else like float32."""
    return "int8" if dtype in ("int8", "uint8", "int16", "int32") else "float32"


def _prod(shape: tuple[int, ...] | list[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def layers_from_model(model: Any) -> list[Layer]:
    """Layers of a parsed model (`models.tflite_file.TfliteModel`), in execution order."""
    layers = []
    for op in model.operators:
        ins = [t for t in op.inputs if t is not None]
        act = ins[0] if ins else (op.outputs[0] if op.outputs else None)
        dtype = kernel_dtype(act.dtype if act is not None else "float32")
        if op.op == "QUANTIZE" and op.outputs:
            dtype = kernel_dtype(op.outputs[0].dtype)
        out = _prod(op.outputs[0].shape) if op.outputs else 0
        macs = 0
        w = ins[1] if len(ins) > 1 else None
        if op.op in CONV_OPS and w is not None and len(w.shape) >= 4:
            macs = out * _prod(w.shape[1:])  # filter [out_c, kh, kw, in_c]
        elif op.op in DEPTHWISE_OPS and w is not None and len(w.shape) >= 4:
            macs = out * w.shape[1] * w.shape[2]  # filter [1, kh, kw, out_c]
        elif op.op in DENSE_OPS and w is not None and len(w.shape) >= 2:
            macs = out * w.shape[-1]  # weights [units, in_features]
        elements = out
        if op.op in POOL_OPS:
            kh = int(op.options.get("filterHeight", 2) or 2)
            kw = int(op.options.get("filterWidth", 2) or 2)
            elements = out * kh * kw
        layers.append(Layer(op.op, dtype, macs, elements))
    return layers


def layer_cycles(layer: Layer, cal: Calibration) -> float:
    """Modelled CPU cycles of one operator."""
    d = layer.dtype
    cycles = cal.op_overhead_cycles
    if layer.op in CONV_OPS or layer.op in DENSE_OPS:
        cycles += layer.macs * cal.mac_cycles[d]
    elif layer.op in DEPTHWISE_OPS:
        cycles += layer.macs * cal.mac_cycles[d] * cal.depthwise_factor
    elif layer.op in POOL_OPS:
        cycles += layer.elements * cal.pool_cycles[d]
    elif layer.op in TRANSCENDENTAL_OPS:
        cycles += layer.elements * cal.transcendental_cycles[d]
    elif layer.op not in FREE_OPS:
        cycles += layer.elements * cal.elementwise_cycles[d]
    return cycles


@dataclass(frozen=True)
class CostModel:
    """Per-operator times (seconds, at the CPU clock) and the current drawn by each operator."""

    layers: tuple[Layer, ...]
    op_seconds: tuple[float, ...]
    invoke_overhead_s: float
    cpu_mhz: int
    idle_current_a: float
    op_current_a: tuple[float, ...]
    jitter_rel_std: float

    @classmethod
    def build(cls, layers: list[Layer], cal: Calibration | None = None, cpu_mhz: int | None = None) -> CostModel:
        """Cost of each layer at `cpu_mhz` (default: the calibration's clock)."""
        cal = cal or load_calibration()
        mhz = cpu_mhz or cal.cpu_mhz
        hz = mhz * 1e6
        return cls(
            layers=tuple(layers),
            op_seconds=tuple(layer_cycles(layer, cal) / hz for layer in layers),
            invoke_overhead_s=cal.invoke_overhead_cycles / hz,
            cpu_mhz=mhz,
            idle_current_a=cal.idle_current_a,
            op_current_a=tuple(cal.idle_current_a + cal.active_current_a[layer.dtype] for layer in layers),
            jitter_rel_std=cal.jitter_rel_std,
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


def reference_layers(dtype: str) -> list[Layer]:
    """The reference CNN (models/cnn.py defaults) as converted for TFLM: BN and ReLU folded in."""
    layers: list[Layer] = []
    h, c = 32, 1
    for f in (32, 64, 128):
        layers.append(Layer("CONV_2D", dtype, macs=h * h * f * 9 * c, elements=h * h * f))
        h //= 2
        layers.append(Layer("MAX_POOL_2D", dtype, elements=h * h * f * 4))
        c = f
    layers.append(Layer("RESHAPE", dtype, elements=h * h * c))
    n_in = h * h * c
    for units in (256, 128, 10):
        layers.append(Layer("FULLY_CONNECTED", dtype, macs=n_in * units, elements=units))
        n_in = units
    layers.append(Layer("SOFTMAX", dtype, elements=10))
    return layers
