"""`LayerProfile`: per-operator times of one inference, from a board's `profile` reply or the virtual board's
cost model, with the shape of each layer, and `layer_changes` between two of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OVERHEAD = "(invoke overhead)"  # what the whole inference costs beyond its operators: the interpreter's loop


@dataclass(frozen=True)
class LayerTime:
    """One operator of an inference: its index in the model, its op, its shape in words and its time."""

    index: int
    op: str
    us: float
    detail: str = ""


@dataclass(frozen=True)
class LayerProfile:
    """Per-operator times of one inference; `total_us` is the whole inference (operators plus overhead)."""

    layers: tuple[LayerTime, ...]
    total_us: float
    source: str  # what measured or estimated it, e.g. "board profile (simulated)" or "virtual esp32 esp-nn"

    @property
    def overhead_us(self) -> float:
        """The inference beyond its operators (the interpreter's loop, the profiler's own events)."""
        return self.total_us - sum(layer.us for layer in self.layers)

    def rows(self) -> list[list[str]]:
        """Table rows: index, op, shape, µs, share of the inference; then the overhead and the total, so the
        rows add up to the whole inference."""
        total = self.total_us or float("nan")
        out = [[str(t.index), t.op, t.detail, f"{t.us:,.1f}", f"{100 * t.us / total:.1f}"] for t in self.layers]
        out.append(["", OVERHEAD, "", f"{self.overhead_us:,.1f}", f"{100 * self.overhead_us / total:.1f}"])
        out.append(["", "total", "", f"{self.total_us:,.1f}", "100.0"])
        return out

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "total_us": self.total_us,
                           "layers": [asdict(t) for t in self.layers]})

    @classmethod
    def from_json(cls, text: str) -> LayerProfile:
        d = json.loads(text)
        return cls(tuple(LayerTime(int(t["index"]), str(t["op"]), float(t["us"]), str(t.get("detail", "")))
                         for t in d["layers"]), float(d["total_us"]), str(d.get("source", "")))

    @classmethod
    def read(cls, path: str | Path) -> LayerProfile:
        return cls.from_json(Path(path).read_text())


HEADERS = ["#", "op", "shape", "µs", "% of inference"]


def describe(layer: Any) -> str:
    """A layer's shape in words (hil.sim.costmodel.Layer): kernel, channels, output pixels and MACs."""
    if layer.macs:
        kernel = f"{layer.kh}×{layer.kw} " if layer.kh * layer.kw > 1 else ""
        chans = f"{layer.in_ch}→{layer.out_ch}" if layer.in_ch or layer.out_ch else ""
        px = f", {layer.pixels:,} px" if layer.pixels else ""
        return f"{kernel}{chans}{px}, {layer.macs:,} MACs".lstrip(", ")
    if layer.window:
        return f"{layer.window:,} window elements"
    if layer.bytes:
        return f"{layer.bytes:,} bytes"
    return f"{layer.elements:,} elements" if layer.elements else ""


def _model_layers(model: bytes) -> list[Any]:
    from hil.sim.costmodel import layers_from_model
    from models.tflite_file import read_model

    return layers_from_model(read_model(model, source="model"))


def from_board(profile: Any, model: bytes | None = None, *, source: str = "board profile") -> LayerProfile:
    """A board's `profile` reply (hil.wire.Profile), each row described from the flashed `model` where its ops are
    the model's in order (otherwise left without a shape)."""
    shapes = _model_layers(model) if model is not None else []
    aligned = len(shapes) == len(profile.ops) and all(s.op == o.op for s, o in zip(shapes, profile.ops, strict=True))
    layers = tuple(LayerTime(o.index, o.op, float(o.us), describe(shapes[i]) if aligned else "")
                   for i, o in enumerate(profile.ops))
    return LayerProfile(layers, float(profile.total_us), source)


def estimate(model: bytes, *, chip: str = "esp32", kernels: str = "esp-nn", cpu_mhz: int | None = None) -> LayerProfile:
    """The virtual board's per-layer estimate of `model` (the cost model, no jitter): what `profile` would say."""
    from hil.sim.costmodel import CostModel, load_calibration

    shapes = _model_layers(model)
    cost = CostModel.build(shapes, load_calibration().profile(chip, kernels), cpu_mhz)
    layers = tuple(LayerTime(i, s.op, t * 1e6, describe(s)) for i, (s, t) in enumerate(zip(shapes, cost.op_seconds,
                                                                                             strict=True)))
    return LayerProfile(layers, cost.latency_s * 1e6, f"virtual {chip} {kernels} at {cost.cpu_mhz} MHz (estimate)")


@dataclass(frozen=True)
class LayerChange:
    """One layer's time in a baseline profile and in this run's."""

    index: int
    op: str
    baseline_us: float
    value_us: float

    @property
    def change_us(self) -> float:
        return self.value_us - self.baseline_us

    @property
    def change_pct(self) -> float:
        return 100 * self.change_us / self.baseline_us if self.baseline_us else float("nan")


def layer_changes(baseline: LayerProfile, new: LayerProfile) -> list[LayerChange] | None:
    """Per-layer change, largest absolute change first, overhead included; None when the two profiles are not of
    the same operators (another model: layers cannot be paired)."""
    if [(t.index, t.op) for t in baseline.layers] != [(t.index, t.op) for t in new.layers]:
        return None
    out = [LayerChange(a.index, a.op, a.us, b.us) for a, b in zip(baseline.layers, new.layers, strict=True)]
    out.append(LayerChange(-1, OVERHEAD, baseline.overhead_us, new.overhead_us))
    return sorted(out, key=lambda c: -abs(c.change_us))
