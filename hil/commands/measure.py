"""`hil measure`: measure variants on the bench and record them, without pytest (a thin layer over hil.campaign).

Exit status: 0 every budget passed, 1 a budget or cross-check failed (or the gate did), 2 a user error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.campaign import CampaignOptions


def run_measure(args: argparse.Namespace) -> int:
    """Measure, judge, record, report; print one line per variant and where everything went."""
    from hil.campaign import run

    names = None if args.variants is None else [n.strip() for c in args.variants for n in c.split(",") if n.strip()]
    options = CampaignOptions(
        bench=Path(args.bench), budgets=Path(args.budgets), variants=names,
        models_config=Path(args.models_config) if args.models_config else None, models_dir=Path(args.models_dir),
        data=args.data, inferences=args.inferences, window=args.window, warmup=args.warmup, trials=args.trials,
        accuracy_samples=args.accuracy_samples, results_db=Path(args.results_db), report_dir=Path(args.report_dir),
        baseline=args.baseline, gate=list(args.gate),
    )
    finish, verdicts = run(options, progress=lambda line: print(f"[hil] {line}", flush=True))
    failed = False
    for variant, by_metric in verdicts.items():
        bad = [v.message for v in by_metric.values() if v.failed]
        skipped = [v.message for v in by_metric.values() if v.outcome == "skipped"]
        if bad:
            failed = True
            print(f"{variant}: FAILED {len(bad)}/{len(by_metric)}: " + "; ".join(bad))
        elif skipped and len(skipped) == len(by_metric):
            print(f"{variant}: skipped: {skipped[0]}")
        else:
            print(f"{variant}: passed {len(by_metric)}/{len(by_metric)}")
    if finish.gate is not None:
        print(finish.gate.table())
        print("gate: FAILED" if finish.gate.failed else "gate: passed")
        failed = failed or finish.gate.failed
    if finish.report_error:
        print(f"hil: error: {finish.report_error}", file=sys.stderr)
        return 2
    print(f"run {finish.run_id} ({finish.status}) recorded in {options.results_db}; report: {finish.report_path}")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil measure` to the CLI (the same options as `pytest -m hil`)."""
    p = subparsers.add_parser(
        "measure",
        help="measure variants on the bench, check their budgets and record them (no pytest needed)",
        description="Flash each selected variant, capture power over the trials, stream the test set for "
        "on-device accuracy, judge the budgets and the cross-checks, record everything in the results database "
        "and write the report: what `pytest -m hil` does, through the same code, on the bench's first board.",
    )
    p.add_argument("--bench", default="bench.yaml", help="bench file (default: %(default)s, the virtual bench)")
    p.add_argument("--budgets", default="budgets.yaml", help="budget file (default: %(default)s)")
    p.add_argument("--variants", action="append", default=None, metavar="NAMES",
                   help="comma-separated variants, recipes or reference-study names (default: the whole matrix)")
    p.add_argument("--models-config", default=None, help="variant matrix (default: models/variants.yaml)")
    p.add_argument("--models-dir", default="artifacts/models", help="factory output folder (default: %(default)s)")
    p.add_argument("--data", default="digits", help="data set: digits | svhn:PATH | mnist:PATH | fashion:PATH")
    p.add_argument("--inferences", type=int, default=None, help="timed inferences per capture (default: --window)")
    p.add_argument("--window", type=float, default=1.0, help="seconds of inference per capture (default: 1.0)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up inferences before each capture (default: 5)")
    p.add_argument("--trials", type=int, default=5, help="captures per variant; median reported (default: 5)")
    p.add_argument("--accuracy-samples", type=int, default=0, help="test images streamed to the device (0 = all)")
    p.add_argument("--results-db", default="reports/results.sqlite", help="results history (default: %(default)s)")
    p.add_argument("--report-dir", default="reports/latest", help="report folder (default: %(default)s)")
    p.add_argument("--baseline", default=None, metavar="RUN", help="gate against a run id or latest-main")
    p.add_argument("--gate", action="append", default=[], metavar="METRIC=TOL", help="e.g. energy_mj=5%%")
    p.set_defaults(func=run_measure)
