"""Derive the virtual board's cost-model constants from published figures, and print the held-out table.

    python -m hil.sim.calibrate [--model ../shared/data/person_detect.tflite]

1. Kernel shapes (cycles per output, per filter tap, per MAC, per element) from esp-nn's kernel-wise tick
   counts on the ESP32-S3 (`esp_nn_kernels` in calibration.yaml, ANSI C and optimized columns): each row is
   turned into a `Layer` with its shape facts, and each op family's coefficients solve its rows.
2. Shapes without kernel figures, derived from those: esp-nn's generic C (ESP32, ESP32-C3), TFLM's reference
   int8 kernels and TFLM's reference float kernels (documented assumptions in calibration.yaml).
3. One scale per chip without kernel figures (ESP32, ESP32-C3), from ONE published person_detect time
   (`fit` in `published`); the ESP32-S3 has none (scale 1: its shapes are its own ticks).
4. The table: the kernel rows reproduced, every person_detect figure held out (but the one per chip that set
   its scale), the study CNN cross-checks.

`tests/harness/test_costmodel.py` checks that calibration.yaml holds what this module derives.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
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
    valid_taps_1d,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PERSON_DETECT = SHARED_DATA / "person_detect.tflite"
ANSI, S3, GENERIC, REFERENCE, FLOAT, SOFT_FLOAT = (
    "esp-nn-ansi-c", "esp-nn-esp32s3", "esp-nn-generic", "tflm-reference", "tflm-reference-float",
    "tflm-reference-soft-float")  # fmt: skip
COLUMNS = {"ansi_c": ANSI, "optimized": S3}


def row_layer(row: dict[str, Any]) -> Layer:
    """The `Layer` one esp-nn kernel-table row runs (shapes from the row's test case in esp-nn's tests/)."""
    kind = row["kind"]
    if kind in ("add", "mul", "relu6"):
        op = {"add": "ADD", "mul": "MUL", "relu6": "RELU6"}[kind]
        return Layer(op, "int8", elements=int(row["elements"]))
    if kind == "fully_connected":
        n, units = int(row["row_len"]), int(row["units"])
        return Layer("FULLY_CONNECTED", "int8", macs=n * units, elements=units, in_ch=n, out_ch=units)
    ih, iw, c = (int(v) for v in row["input"])
    oh, ow = (int(v) for v in row["output"])
    pad, stride = int(row["pad"]), int(row["stride"])
    if kind == "conv":
        out_ch, kh, kw = (int(v) for v in row["filter"])
    else:
        kh, kw = (int(v) for v in row["filter"])
        out_ch = c * int(row.get("multiplier", 1))
    taps = valid_taps_1d(ih, kh, stride, oh, pad) * valid_taps_1d(iw, kw, stride, ow, pad)
    if kind in ("max_pool", "avg_pool"):
        op = "MAX_POOL_2D" if kind == "max_pool" else "AVERAGE_POOL_2D"
        return Layer(op, "int8", elements=oh * ow * c, window=taps * c)
    op = "CONV_2D" if kind == "conv" else "DEPTHWISE_CONV_2D"
    return Layer(op, "int8", macs=oh * ow * out_ch * kh * kw * (c if kind == "conv" else 1),
                 elements=oh * ow * out_ch, in_ch=c, out_ch=out_ch, kh=kh, kw=kw, pixels=oh * ow, stride=stride,
                 multiplier=int(row.get("multiplier", 1)), taps=taps, in_pixels=ih * iw)  # fmt: skip


def _conv_terms(layer: Layer) -> tuple[float, float, float]:
    """(output elements, output element x tap pairs, MACs) of a conv layer: what the ANSI C loops cost."""
    pairs = layer.valid_taps * layer.out_ch
    return layer.pixels * layer.out_ch, pairs, pairs * layer.in_ch


def _dw_terms(layer: Layer) -> tuple[float, float]:
    """(output elements, MACs) of a depthwise layer (taps outside the padded input are not computed)."""
    return layer.pixels * layer.out_ch, layer.valid_taps * layer.out_ch


def _solve(rows: list[tuple[tuple[float, ...], float]]) -> list[float]:
    a = np.array([terms for terms, _ in rows], dtype=float)
    return [float(x) for x in np.linalg.solve(a, [t for _, t in rows])]


def derive_shapes(kernels: dict[str, dict[str, Any]], assumptions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every kernel shape, from esp-nn's ESP32-S3 ticks (`kernels`) and the stated `assumptions`."""
    rows = {name: (r, row_layer(r)) for name, r in kernels.items()}

    def ticks(name: str, column: str) -> float:
        return float(rows[name][0][column])

    def per(name: str, column: str, unit: str) -> float:
        return ticks(name, column) / getattr(rows[name][1], unit)

    conv_rows = ("conv_1x1_64", "conv_1x1_16", "conv_3x3_in3")
    dw_rows = ("depthwise_3x3", "depthwise_5x5_mult8")
    fc = rows["fully_connected"][1]
    shapes: dict[str, dict[str, Any]] = {}
    # ANSI C: the conv loops cost per output (requantise, store), per tap (inner-loop entry) and per MAC.
    o, t, m = _solve([(_conv_terms(rows[n][1]), ticks(n, "ansi_c")) for n in conv_rows])
    do, dm = _solve([(_dw_terms(rows[n][1]), ticks(n, "ansi_c")) for n in dw_rows])
    fc_out = o + t  # ASSUMPTION: FC requantises and enters its inner loop like conv
    fc_mac = (ticks("fully_connected", "ansi_c") - fc_out * fc.elements) / fc.macs
    shapes[ANSI] = _shape_dict(
        conv=(o, t, m), dw=(do, dm), dense=(fc_out, fc_mac),
        pool=(per("max_pool", "ansi_c", "window"), per("avg_pool", "ansi_c", "window")),
        add=per("elementwise_add", "ansi_c", "elements"), mul=per("elementwise_mul", "ansi_c", "elements"),
        unary=per("relu6", "ansi_c", "elements"), assumptions=assumptions)  # fmt: skip
    # ESP32-S3 SIMD: the two 1x1 rows (vector path) give per output and per MAC; the 3x3 conv over 3 input
    # channels runs esp-nn's scalar C conv (channels not a multiple of 8): its speed-up over the ANSI C shape.
    so, sm = _solve([(_conv_terms(rows[n][1])[::2], ticks(n, "optimized")) for n in conv_rows[:2]])
    dso, dsm = _solve([(_dw_terms(rows[n][1]), ticks(n, "optimized")) for n in dw_rows])
    sfc_mac = (ticks("fully_connected", "optimized") - so * fc.elements) / fc.macs
    s3 = _shape_dict(
        conv=(so, 0.0, sm), dw=(dso, dsm), dense=(so, sfc_mac),
        pool=(per("max_pool", "optimized", "window"), per("avg_pool", "optimized", "window")),
        add=per("elementwise_add", "optimized", "elements"), mul=per("elementwise_mul", "optimized", "elements"),
        unary=per("relu6", "optimized", "elements"), assumptions=assumptions)  # fmt: skip
    ansi_3x3 = o * _conv_terms(rows["conv_3x3_in3"][1])[0] + t * _conv_terms(rows["conv_3x3_in3"][1])[1] \
        + m * _conv_terms(rows["conv_3x3_in3"][1])[2]  # fmt: skip
    speedup = ansi_3x3 / ticks("conv_3x3_in3", "optimized")
    shapes[S3] = {**s3, "lanes": int(assumptions["s3_lanes"]), "fallback": ANSI, "fallback_speedup": speedup}
    # esp-nn's generic C (ESP32, ESP32-C3): ANSI C, with conv and depthwise at the scalar-C speed-up above.
    shapes[GENERIC] = _scaled(shapes[ANSI], conv=1 / speedup, depthwise=1 / speedup)
    # TFLM reference int8: the ANSI C loops plus two 4-D Offset() index computations per MAC, one per window
    # element of a pool.
    idx = float(assumptions["offset_cycles"])
    shapes[REFERENCE] = _added(shapes[ANSI], mac=2 * idx, window=idx)
    # TFLM reference float: the reference loops with one FPU madd.s per MAC in place of the integer
    # multiply-add (plus `float_mac_extra`); ESP32-C3 (no FPU) adds soft-float calls per MAC and per element.
    fl = _added(shapes[REFERENCE], mac=float(assumptions["float_mac_extra"]), window=0.0)
    shapes[FLOAT] = fl
    soft = float(assumptions["soft_float_op"])
    sf = _added(fl, mac=2 * soft, window=soft)
    for k in ("add", "mul", "unary"):
        sf[k] += soft
    shapes[SOFT_FLOAT] = sf
    return {name: _rounded(d) for name, d in shapes.items()}


def _shape_dict(*, conv: tuple[float, float, float], dw: tuple[float, float], dense: tuple[float, float],
                pool: tuple[float, float], add: float, mul: float, unary: float, assumptions: dict[str, Any]
                ) -> dict[str, Any]:  # fmt: skip
    return {
        "conv": {"output": conv[0], "tap": conv[1], "mac": conv[2]},
        "depthwise": {"output": dw[0], "mac": dw[1]},
        "dense": {"output": dense[0], "mac": dense[1]},
        "sequence_mac": dense[1],
        "pool": {"max": pool[0], "avg": pool[1]},
        "add": add, "mul": mul, "unary": unary,
        "transcendental": float(assumptions["transcendental"]), "move": float(assumptions["move"]),
    }  # fmt: skip


def _scaled(d: dict[str, Any], conv: float, depthwise: float) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    out["conv"] = {k: v * conv for k, v in d["conv"].items()}
    out["depthwise"] = {k: v * depthwise for k, v in d["depthwise"].items()}
    return out


def _added(d: dict[str, Any], mac: float, window: float) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for fam in ("conv", "depthwise", "dense"):
        out[fam]["mac"] += mac
    out["sequence_mac"] += mac
    out["pool"] = {k: v + window for k, v in d["pool"].items()}
    return out


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    def r(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: r(x) for k, x in v.items()}
        return float(f"{v:.5g}") if isinstance(v, float) else v

    return r(d)


def model_layers(path: Path) -> list[Layer]:
    """Layers of a .tflite file."""
    from models.tflite_file import read_model

    return layers_from_model(read_model(path.read_bytes(), source=path.name))


def fit_chip_scale(layers: list[Layer], cal: Calibration, chip: str, kernels: str, target_ms: float) -> float:
    """The chip scale at which `layers` take `target_ms` on (chip, kernels) at the chip's clock."""
    p = cal.profile(chip, kernels)
    k = p.by_dtype["int8"]
    fixed = p.invoke_overhead_cycles + len(layers) * p.op_overhead_cycles
    work = sum(k.shape.cycles(layer) for layer in layers)
    return (target_ms * 1e-3 * p.cpu_mhz * 1e6 - fixed) / work


def derived_scales(cal: Calibration, person_detect: Path = PERSON_DETECT) -> dict[str, float]:
    """Each chip's scale: 1.0 on the ESP32-S3 (its own ticks), else fitted to its one `fit` figure."""
    scales = {"esp32s3": 1.0}
    layers = model_layers(person_detect)
    for f in cal.published:
        if f.get("fit"):
            scales[f["chip"]] = fit_chip_scale(layers, cal, f["chip"], f["kernels"], float(f["ms"]))
    return scales


@dataclass(frozen=True)
class Row:
    """One line of the held-out table."""

    figure: str
    source: str
    published: float
    model: float
    unit: str
    status: str  # "held out", "fitted", "reproduced" (a kernel row the shape was solved from), "cross-check"

    @property
    def ratio(self) -> float:
        return self.model / self.published

    @property
    def error_pct(self) -> float:
        return (self.model - self.published) / self.published * 100


def kernel_rows(cal: Calibration) -> list[Row]:
    """esp-nn's kernel rows against the shapes: the table they were solved from, and the later table."""
    out = []
    for table, status in (("esp_nn_kernels", "reproduced"), ("esp_nn_kernels_current", "cross-check")):
        block = cal.latency.get(table) or {}
        for name, r in (block.get("rows") or {}).items():
            layer = row_layer(r)
            for column, shape in COLUMNS.items():
                if r.get(column) is None or (status == "cross-check" and column == "optimized"):
                    continue
                model = cal.shapes[shape].cycles(layer)
                out.append(Row(f"esp-nn {block['version_short']} {name} ({r['data']}), S3 {column}",
                               "esp-nn README", float(r[column]), model, "ticks", status))  # fmt: skip
    return out


def table(cal: Calibration | None = None, person_detect: Path = PERSON_DETECT) -> list[Row]:
    """Every published figure next to the model's value (person_detect rows need the model file)."""
    cal = cal or load_calibration()
    rows: list[Row] = []
    if person_detect.is_file():
        layers = model_layers(person_detect)
        for f in cal.published:
            cost = CostModel.build(layers, cal.profile(f["chip"], f["kernels"]))
            rows.append(Row(f"person_detect, {f['chip']} {f['cpu_mhz']} MHz, {f['kernels']}", f["source"],
                            float(f["ms"]), cost.latency_s * 1e3, "ms",
                            "fitted" if f.get("fit") else "held out"))  # fmt: skip
    for c in cal.cross_checks:
        cost = CostModel.build(study_cnn_layers(c["dtype"]), cal.profile(c["chip"], c["kernels"]))
        value = cost.latency_s * 1e3 if c["metric"] == "latency_ms" else cost.active_current_a * cal.supply_volts * 1e3
        unit = "ms" if c["metric"] == "latency_ms" else "mW"
        rows.append(Row(c["figure"], c["source"], float(c["value"]), value, unit,
                        "fitted" if c.get("fitted") else "cross-check"))  # fmt: skip
    return rows


def not_reproduced(cal: Calibration) -> list[tuple[str, str]]:
    """esp-nn kernel-table rows the model does not reproduce, with the reason (from calibration.yaml)."""
    return [(str(r["row"]), str(r["reason"])) for r in cal.latency.get("esp_nn_not_reproduced") or []]


def text_table(rows: list[Row]) -> str:
    """The held-out table as fixed-width text: model, chip, kernels, published, virtual, ratio."""
    lines = [f"{'figure':<78} {'published':>13} {'virtual':>13} {'ratio':>6}  status"]
    for r in rows:
        fmt = ",.0f" if r.unit == "ticks" else ",.1f"
        lines.append(f"{r.figure:<78} {format(r.published, fmt):>9} {r.unit:<3} {format(r.model, fmt):>9} "
                     f"{r.unit:<3} {r.ratio:>6.3f}  {r.status}")  # fmt: skip
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    """The same table as markdown."""
    lines = ["| figure | source | published | virtual | ratio | |", "|---|---|---|---|---|---|"]
    for r in rows:
        fmt = ",.0f" if r.unit == "ticks" else ",.1f"
        lines.append(f"| {r.figure} | {r.source} | {format(r.published, fmt)} {r.unit} | {format(r.model, fmt)} "
                     f"{r.unit} | {r.ratio:.2f} | {r.status} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=PERSON_DETECT, help="person_detect.tflite")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args(argv)
    cal = load_calibration()
    shapes = derive_shapes(cal.latency["esp_nn_kernels"]["rows"], cal.latency["shape_assumptions"])
    for name, d in shapes.items():
        print(f"shape {name}: {d}")
    if args.model.is_file():
        for chip, s in derived_scales(cal, args.model).items():
            print(f"chip scale {chip}: {s:.4g}")
    else:
        print(f"{args.model} not found: chip scales not re-derived, person_detect rows left out")
    rows = kernel_rows(cal) + table(cal, args.model)
    print(markdown(rows) if args.markdown else text_table(rows))
    print("\nesp-nn kernel rows not reproduced:")
    for row, reason in not_reproduced(cal):
        print(f"  {row}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
