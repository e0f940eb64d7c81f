"""Derive the virtual board's cost-model constants from the published figures, and print the calibration table.

    python -m hil.sim.calibrate [--model ../shared/data/person_detect.tflite]

1. Kernel shapes (cycles per MAC, per output, per element) from esp-nn's kernel-wise tick counts
   (`esp_nn_kernels` in calibration.yaml): the two 1x1 convolutions give cycles/MAC and cycles/output, the
   other rows one coefficient each.
2. One int8 scale per (chip, kernels): the scale at which person_detect's modelled invoke() equals the
   published time (`published` in calibration.yaml). Float scales are assumptions (no published figure).
3. The table: every published figure with the model's value and error, fitted ones and cross-checks apart.

`tests/harness/test_costmodel.py` checks that calibration.yaml holds what this module derives.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hil.sim.costmodel import (
    Calibration,
    CostModel,
    Layer,
    layers_from_model,
    load_calibration,
    study_cnn_layers,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PERSON_DETECT = SHARED_DATA / "person_detect.tflite"


def derive_shape(rows: dict[str, dict[str, Any]], column: str) -> dict[str, float]:
    """Shape coefficients from esp-nn's kernel-wise ticks (`column`: "ansi_c" or "optimized")."""
    t = {name: float(r[column]) for name, r in rows.items()}
    a = np.array([[rows["conv_1x1_64"]["macs"], rows["conv_1x1_64"]["outputs"]],
                  [rows["conv_1x1_16"]["macs"], rows["conv_1x1_16"]["outputs"]]], dtype=float)  # fmt: skip
    mac, out = np.linalg.solve(a, [t["conv_1x1_64"], t["conv_1x1_16"]])
    dw, fc = rows["depthwise_3x3"], rows["fully_connected"]
    return {
        "conv": float(mac),
        "output": float(out),
        "depthwise": (t["depthwise_3x3"] - out * dw["outputs"]) / dw["macs"],
        "dense": (t["fully_connected"] - out * fc["outputs"]) / fc["macs"],
        "max": t["max_pool"] / rows["max_pool"]["window"],
        "avg": t["avg_pool"] / rows["avg_pool"]["window"],
        "binary": (t["elementwise_add"] + t["elementwise_mul"]) / 2 / rows["elementwise_add"]["elements"],
        "unary": t["relu6"] / rows["relu6"]["elements"],
    }


def shape_cycles(rows: dict[str, dict[str, Any]], name: str, cal: Calibration, shape: str) -> float:
    """What a shape predicts for one esp-nn kernel row (scale 1.0, no dispatch cost)."""
    r = rows[name]
    op = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D"}[r["kind"]]
    return cal.shapes[shape].cycles(Layer(op, "int8", macs=int(r["macs"]), elements=int(r["outputs"])))


def model_layers(path: Path) -> list[Layer]:
    from models.tflite_file import read_model

    return layers_from_model(read_model(path.read_bytes(), source=path.name))


def fit_scale(layers: list[Layer], cal: Calibration, chip: str, kernels: str, target_ms: float) -> float:
    """The int8 scale at which `layers` take `target_ms` on (chip, kernels) at the chip's clock."""
    p = cal.profile(chip, kernels)
    k = p.by_dtype["int8"]
    fixed = p.invoke_overhead_cycles + len(layers) * p.op_overhead_cycles
    work = sum(k.shape.cycles(layer) for layer in layers)
    return (target_ms * 1e-3 * p.cpu_mhz * 1e6 - fixed) / work


@dataclass(frozen=True)
class Row:
    figure: str
    source: str
    published: float
    model: float
    unit: str
    fitted: bool

    @property
    def error_pct(self) -> float:
        return (self.model - self.published) / self.published * 100


def table(cal: Calibration | None = None, person_detect: Path = PERSON_DETECT) -> list[Row]:
    """Every published figure next to the model's value (person_detect rows need the model file)."""
    cal = cal or load_calibration()
    rows: list[Row] = []
    if person_detect.is_file():
        layers = model_layers(person_detect)
        for f in cal.published:
            cost = CostModel.build(layers, cal.profile(f["chip"], f["kernels"]))
            rows.append(Row(f"person_detect invoke(), {f['chip']} {f['cpu_mhz']} MHz, {f['kernels']}",
                            f["source"], float(f["ms"]), cost.latency_s * 1e3, "ms", True))  # fmt: skip
    kern = cal.latency["esp_nn_kernels"]
    for name in ("conv_3x3_in3", "depthwise_5x5_pad1"):
        r = kern[name]
        for column, shape in (("ansi_c", "esp-nn-ansi-c"), ("optimized", "esp-nn-esp32s3")):
            if r.get(column) is None:
                continue
            rows.append(Row(f"esp-nn {name} ({r['data']}), ESP32-S3 {column}", "esp-nn README",
                            float(r[column]), shape_cycles(kern, name, cal, shape), "ticks", False))  # fmt: skip
    for c in cal.cross_checks:
        profile = cal.profile(c["chip"], c["kernels"])
        if c.get("model") == "person_detect":
            if not person_detect.is_file():
                continue
            layers = model_layers(person_detect)
            k = profile.by_dtype["int8"]
            profile = replace(profile, by_dtype={**profile.by_dtype, "int8": replace(k, scale=float(c["scale"]))})
        else:
            layers = study_cnn_layers(c["dtype"])
        cost = CostModel.build(layers, profile)
        value = cost.latency_s * 1e3 if c["metric"] == "latency_ms" else cost.active_current_a * cal.supply_volts * 1e3
        unit = "ms" if c["metric"] == "latency_ms" else "mW"
        rows.append(Row(c["figure"], c["source"], float(c["value"]), value, unit, bool(c.get("fitted", False))))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| figure | source | published | model | error |", "|---|---|---|---|---|"]
    for r in rows:
        kind = " (fitted)" if r.fitted else " (cross-check)"
        lines.append(f"| {r.figure}{kind} | {r.source} | {r.published:,.1f} {r.unit} | {r.model:,.1f} {r.unit} "
                     f"| {r.error_pct:+.1f} % |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=PERSON_DETECT, help="person_detect.tflite")
    args = ap.parse_args(argv)
    cal = load_calibration()
    kern = cal.latency["esp_nn_kernels"]
    for column in ("ansi_c", "optimized"):
        print(f"shape from esp-nn {column}:", {k: round(v, 4) for k, v in derive_shape(kern, column).items()})
    if args.model.is_file():
        layers = model_layers(args.model)
        for f in cal.published:
            s = fit_scale(layers, cal, f["chip"], f["kernels"], float(f["ms"]))
            print(f"int8 scale {f['chip']:8s} {f['kernels']:9s}: {s:.4g}")
    else:
        print(f"{args.model} not found: scales not re-derived")
    print(markdown(table(cal, args.model)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
