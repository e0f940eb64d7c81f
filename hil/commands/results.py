"""`hil history` (the results database over runs), `hil gate` (a run against a window of baseline runs) and
`hil noise` (the bench's noise from its history).

`hil gate` exits 0 when the gate passes, 1 on a regression, an invalid or missing figure or (policy fail) an
INCONCLUSIVE one, 2 on a user error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hil.errors import HilError
from hil.gate import DEFAULT_TOLERANCES
from hil.gate.decide import DEFAULT_ALPHA, DEFAULT_MISS, DEFAULT_WINDOW, POLICIES
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
        help="judge a run against a window of baseline runs: change with interval, verdict per figure",
        description="Estimate each variant's and metric's change against the last runs of the base branch, "
        "with intervals, and decide over the whole matrix: ok, improved, REGRESSION or INCONCLUSIVE "
        "(re-measured with --remeasure, then --policy). Exit status: 0 pass, 1 fail, 2 usage error.",
    )
    g.add_argument(
        "--db", default=DEFAULT_RESULTS_DB, help=f"results database (default: {DEFAULT_RESULTS_DB})"
    )
    g.add_argument("--baseline", default="latest-main", metavar="REF",
                   help="base branch (its last --baseline-window finished runs), 'latest-main' (main or master; "
                        "default) or run ids such as 31-40")
    g.add_argument("--baseline-window", type=int, default=DEFAULT_WINDOW, metavar="K",
                   help="baseline runs to estimate from (default: %(default)s; at least 3)")
    g.add_argument("--run", default="latest", metavar="REF", help="run to check (default: latest)")
    g.add_argument(
        "--tolerance",
        nargs="+",
        action="extend",
        default=[],
        metavar="METRIC=TOL",
        help="the smallest regression to catch, e.g. energy_mj=5%% accuracy=0.5pp arena_kb=2 (relative %%, "
        f"percentage points, or absolute in the metric's unit; default: {' '.join(DEFAULT_TOLERANCES)})",
    )
    g.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="chance that a merge which changed nothing gets any REGRESSION (default: %(default)s)")
    g.add_argument("--miss", type=float, default=DEFAULT_MISS,
                   help="chance that one figure's regression of exactly its tolerance passes (default: %(default)s)")
    g.add_argument("--remeasure", type=int, default=0, metavar="N",
                   help="re-measure INCONCLUSIVE variants as up to N new sessions on the run's bench (default: 0)")
    g.add_argument("--policy", choices=POLICIES, default="fail",
                   help="what INCONCLUSIVE figures left at the end do: fail the gate, warn, or pass (default: fail)")
    g.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    g.add_argument("--markdown", default=None, metavar="PATH", help="also write a Markdown summary (PR comment)")
    g.set_defaults(func=run_gate)

    n = subparsers.add_parser(
        "noise",
        help="estimate the bench's noise per variant and metric from the history, to set tolerances",
        description="Within-run (trial to trial) and between-run coefficients of variation of every figure of "
        "the last runs of a branch, the part a whole run shares, and the smallest change `hil gate` resolves "
        "with 1, 2 or 3 sessions.",
    )
    n.add_argument("--db", default=DEFAULT_RESULTS_DB, help=f"results database (default: {DEFAULT_RESULTS_DB})")
    n.add_argument("--branch", default="main", help="branch whose runs to use (default: %(default)s)")
    n.add_argument("--metric", nargs="+", default=None, help="only these metrics (default: every budgeted one)")
    n.add_argument("--last", type=int, default=30, metavar="N", help="newest N runs (0 = all; default 30)")
    n.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    n.set_defaults(func=run_noise)


def _cell(value: float | None, valid: bool) -> str:
    return "INVALID" if not valid or value is None else f"{value:.4g}"


def run_history(args: argparse.Namespace) -> int:
    """Print runs, or the trend table of the selected variant/metric."""
    import pandas as pd

    if args.metric is not None:
        metric(args.metric)
    if args.last < 0:
        raise HilError(f"--last {args.last}: must be 0 (all runs) or a positive number")
    store = ResultsStore(args.db, readonly=True)
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
    """Judge, re-measure what is unsure if asked, print the table, write JSON/Markdown; 1 when the gate fails."""
    from hil.campaign import remeasurer
    from hil.gate import compare, parse_tolerances

    tolerances = parse_tolerances(args.tolerance or list(DEFAULT_TOLERANCES))
    if args.remeasure < 0:
        raise HilError(f"--remeasure {args.remeasure}: must be 0 or more sessions")
    store = ResultsStore(args.db, create=False, readonly=not args.remeasure)  # re-measuring records runs
    measure = remeasurer(store, args.run, progress=lambda line: print(f"  {line}")) if args.remeasure else None
    result = compare(store, args.run, args.baseline, tolerances, window=args.baseline_window, alpha=args.alpha,
                     miss=args.miss, policy=args.policy, remeasure=args.remeasure, measure=measure, progress=print)
    print(result.table())
    for path, text in ((args.json, lambda: json.dumps(result.to_dict(), indent=2, default=str) + "\n"),
                       (args.markdown, result.markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text())
    return 1 if result.failed else 0


def run_noise(args: argparse.Namespace) -> int:
    """Print the noise table (and JSON)."""
    from dataclasses import asdict

    from hil.gate.noise import estimate, table

    for m in args.metric or []:
        metric(m)
    store = ResultsStore(args.db, readonly=True)
    rows = estimate(store, branch=args.branch, metrics=args.metric, last=args.last)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0
