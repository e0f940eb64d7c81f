"""`hil mlperf`: MLPerf Tiny models (their own .tflite files) measured through the MLPerf Tiny path on the virtual
board: latency, energy per inference and the DUT's results against the host TFLM runtime (a thin layer over
hil.dut.mlperf_models).

Exit status: 0 every model's results agree with the host's on at least --min-agreement % of the inputs, 1 one
does not, 2 a user error.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hil.bench import DEFAULT_BENCH_FILE

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REFERENCE_MODELS = ("mlperf_tiny_kws_ref_model", "mlperf_tiny_vww_96_int8", "mlperf_tiny_resnet_quant",
                    "mlperf_tiny_ad01_int8")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil mlperf` to the CLI."""
    p = subparsers.add_parser(
        "mlperf", help="measure MLPerf Tiny models through the MLPerf Tiny path on the virtual board",
        description="Flash each model on the bench's virtual board as an MLPerf Tiny DUT (docs/mlperf-tiny.md), "
        "measure its latency and, with the bench's scope, its energy between the timestamp edges; then feed it "
        "seeded inputs in its benchmark's wire format and compare each result with the host TFLM runtime's. "
        "Every figure is simulated.")
    p.add_argument("models", nargs="*", type=Path,
                   help=f"models (default: the four MLPerf Tiny reference models in {SHARED_DATA})")
    p.add_argument("--bench", default=DEFAULT_BENCH_FILE, help=f"bench file (default: {DEFAULT_BENCH_FILE})")
    p.add_argument("--board", default=None, help="board in the bench file (default: the first)")
    p.add_argument("--inputs", type=int, default=100, help="seeded inputs per model for the results (default: 100)")
    p.add_argument("--seed", type=int, default=22, help="seed of the inputs (default: 22)")
    p.add_argument("--trials", type=int, default=5, help="timed windows per model; medians (default: 5)")
    p.add_argument("--window", type=float, default=1.0,
                   help="seconds of inference per window (default: 1.0; the MLPerf Tiny runner's rule: 10)")
    p.add_argument("--min-agreement", type=float, default=99.0,
                   help="results agreeing with the host's, in %%, below which the exit status is 1 (default: 99)")
    p.set_defaults(func=run)


def _models(given: list[Path]) -> list[Path]:
    from hil.errors import HilError

    if given:
        return given
    paths = [SHARED_DATA / f"{name}.tflite" for name in REFERENCE_MODELS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise HilError(f"{missing[0]} is absent: give the models' paths (hil mlperf MODEL.tflite ...)")
    return paths


def _cell(fig, fmt: str) -> str:
    if fig is None or fig.value is None or not math.isfinite(fig.value):
        return "–"
    return format(fig.value, fmt)


def run(args: argparse.Namespace) -> int:
    """Measure each model, print one table, exit 1 if any model's results disagree with the host's."""
    from hil.bench import load_bench
    from hil.dut.mlperf_models import measure_model
    from hil.errors import HilError
    from hil.measure import Settings

    if args.inputs < 1 or args.trials < 1 or args.window <= 0:
        raise HilError("--inputs and --trials must be at least 1 and --window positive")
    config = load_bench(args.bench)
    settings = Settings(trials=args.trials, window_s=args.window)
    rows = []
    for path in _models(args.models):
        print(f"[hil] {path.name}: flashing on the virtual MLPerf Tiny DUT", flush=True)
        r = measure_model(config, path, board=args.board, inputs=args.inputs, seed=args.seed, settings=settings,
                          progress=lambda s: print(f"[hil] {s}", flush=True))
        f = r.figures
        rows.append([path.stem, r.kind or "–", _cell(f.get("latency_ms"), ".3f"), _cell(f.get("latency_p95_ms"), ".3f"),
                     _cell(f.get("inferences_per_s"), ".2f"), _cell(f.get("energy_mj"), ".3f"),
                     _cell(f.get("energy_uj"), ".0f"), _cell(f.get("active_power_mw"), ".0f"),
                     f"{r.agreement_pct:.1f} ({r.agreeing}/{r.inputs})", r.agreement_pct >= args.min_agreement])
    head = ["model", "m-model", "latency ms", "p95 ms", "inf/s", "energy mJ", "energy µJ", "active mW",
            "results as host TFLM %"]
    widths = [max(len(head[i]), *(len(str(row[i])) for row in rows)) for i in range(len(head))]
    print("simulated (virtual ESP32 cost model and simulated scope):")
    for row in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
    bad = [row[0] for row in rows if not row[-1]]
    if bad:
        print(f"results below {args.min_agreement:g} % agreement with the host TFLM runtime: {', '.join(bad)}")
    return 1 if bad else 0
