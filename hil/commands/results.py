"""`hil history` (trend of the results database) and `hil gate` (compare a run with a baseline run).

`hil gate` exits 0 when the gate passes, 1 on a regression, invalid or missing measurement, 2 on a user error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hil.errors import HilError
from hil.metrics import METRICS, metric
from hil.results import DEFAULT_RESULTS_DB, ResultsStore


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil history` and `hil gate` to the CLI."""
    h = subparsers.add_parser(
        "history",
        help="print the trend of measurements over runs from the results database",
        description="One row per run (and variant), one column per metric or variant. Simulated runs are "
        "marked 'sim'; invalid measurements show as INVALID.",
    )
    h.add_argument(
        "--db", default=DEFAULT_RESULTS_DB, help=f"results database (default: {DEFAULT_RESULTS_DB})"
    )
    h.add_argument("--variant", default=None, help="only this variant")
    h.add_argument("--metric", default=None, help=f"only this metric ({', '.join(METRICS)})")
    h.add_argument("--runs", action="store_true", help="list the runs with their status instead")
    h.add_argument(
        "--last", type=int, default=20, metavar="N", help="only the newest N runs (0 = all; default 20)"
    )
    h.set_defaults(func=run_history)

    g = subparsers.add_parser(
        "gate",
        help="compare a run with a baseline run; exit 1 on a regression beyond tolerance",
        description="Print every metric of every variant with its change from the baseline. Exit status: "
        "0 pass, 1 regression beyond tolerance or invalid/missing measurement, 2 usage error.",
    )
    g.add_argument(
        "--db", default=DEFAULT_RESULTS_DB, help=f"results database (default: {DEFAULT_RESULTS_DB})"
    )
    g.add_argument(
        "--baseline",
        required=True,
        metavar="REF",
        help="baseline run: a run id, 'latest' or 'latest-main' (newest finished run on main)",
    )
    g.add_argument("--run", default="latest", metavar="REF", help="run to check (default: latest)")
    g.add_argument(
        "--tolerance",
        nargs="+",
        action="extend",
        default=[],
        metavar="METRIC=TOL",
        help="e.g. energy_mj=5%% latency_ms=5%% accuracy=0.5pp arena_kb=2 (relative %%, "
        "percentage points, or absolute in the metric's unit)",
    )
    g.add_argument("--json", default=None, metavar="PATH", help="also write the comparison as JSON")
    g.set_defaults(func=run_gate)


def _cell(value: float | None, valid: bool) -> str:
    return "INVALID" if not valid or value is None else f"{value:.4g}"


def run_history(args: argparse.Namespace) -> int:
    """Print runs, or the trend table of the selected variant/metric."""
    import pandas as pd

    if args.metric is not None:
        metric(args.metric)
    if args.last < 0:
        raise HilError(f"--last {args.last}: must be 0 (all runs) or a positive number")
    store = ResultsStore(args.db, create=False)
    runs = store.runs(limit=args.last or None)
    if args.runs:
        print(_runs_table(store, runs))
        return 0
    df = store.history(variant=args.variant, metric=args.metric)
    df = df[df["run_id"].isin([r.id for r in runs])]
    if df.empty:
        what = " and ".join(
            f"{k} {v!r}" for k, v in (("variant", args.variant), ("metric", args.metric)) if v
        )
        print(f"no measurements{' for ' + what if what else ''} in {args.db}")
        return 0
    df = df.assign(cell=[_cell(v, ok) for v, ok in zip(df["value"], df["valid"], strict=True)])
    df["run"] = [f"{i}{' sim' if s else ''}" for i, s in zip(df["run_id"], df["simulated"], strict=True)]
    df["commit"] = df["git_commit"].str[:8]
    index = ["run", "started_at", "commit", "git_branch", "status"]
    df["started_at"] = df["started_at"].str[:16]
    if args.metric and not args.variant:
        columns = "variant"  # one row per run, one column per variant
    elif args.variant and not args.metric:
        columns = "metric"  # one row per run, one column per metric
    elif args.variant and args.metric:
        columns = "metric"
    else:
        index.append("variant")  # one row per run and variant, one column per metric
        columns = "metric"
    table = df.pivot_table(index=index, columns=columns, values="cell", aggfunc="last", sort=False)
    if columns == "metric":
        table = table[[m for m in list(METRICS) + sorted(set(table.columns) - set(METRICS)) if m in table]]
        table.columns = [
            f"{m} ({METRICS[m].unit})" if m in METRICS and METRICS[m].unit else m for m in table.columns
        ]
    table = table.reset_index().rename(columns={"git_branch": "branch", "started_at": "started (UTC)"})
    if args.variant and args.metric:
        values = df.set_index("run")["value"].where(df.set_index("run")["valid"])
        table["change %"] = [f"{x:+.2f}" if pd.notna(x) else "" for x in values.pct_change().values * 100]
    print(table.fillna("").to_string(index=False))
    return 0


def _runs_table(store: ResultsStore, runs: list) -> str:
    import pandas as pd

    rows = []
    for r in runs:
        ms = store.measurements(r.id)
        rows.append(
            {
                "run": r.id,
                "started (UTC)": r.started_at[:19],
                "finished": (r.finished_at or "")[:19],
                "commit": r.git_commit[:8],
                "branch": r.git_branch,
                "bench": r.bench,
                "simulated": "yes" if r.simulated else "no",
                "status": r.status,
                "measurements": len(ms),
                "invalid": sum(not m.valid for m in ms),
            }
        )
    if not rows:
        return f"no runs in {store.path}"
    return pd.DataFrame(rows).to_string(index=False)


def run_gate(args: argparse.Namespace) -> int:
    """Compare, print the table, and return 1 when the gate fails."""
    from hil.gate import compare, parse_tolerances

    tolerances = parse_tolerances(args.tolerance)
    store = ResultsStore(args.db, create=False)
    result = compare(store, args.run, args.baseline, tolerances)
    print(result.table())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return 1 if result.failed else 0
