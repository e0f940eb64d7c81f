"""`hil changes`: change points in the results history of one branch (hil.gate.changepoints), one line each.

Exit status: 0 (also when changes are found), 1 with `--fail-on-change` when the newest run confirms a change
(one a nightly job has not failed on before), 2 on a usage error (unknown metric, too few runs, simulated and
real runs mixed, not a results database).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hil.errors import HilError
from hil.metrics import METRICS, metric
from hil.results import DEFAULT_RESULTS_DB

DEFAULT_LAST = 30  # the history length the benchmark calibrates the false-alarm rate on


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil changes` to the CLI."""
    p = subparsers.add_parser(
        "changes",
        help="find change points in a branch's results history: which commits moved which figure",
        description="Binary segmentation of every variant's metric series over the branch's runs, the drift "
        "shared by all variants of a night cancelled. One line per change: size with a 95 %% interval, the "
        "first run after it and the commit range. A change at the newest run is only suspected until the "
        "next run confirms it. Exit 0; 1 with --fail-on-change when the newest run confirms a change; 2 on a "
        "usage error.",
    )
    p.add_argument("--db", default=DEFAULT_RESULTS_DB, help="results database (default: %(default)s)")
    p.add_argument("--branch", default="main", help="git branch whose runs form the history (default: main)")
    p.add_argument("--metric", nargs="+", action="extend", default=[], metavar="METRIC",
                   help=f"only these metrics (default: all measured; known: {', '.join(METRICS)})")
    p.add_argument("--variant", nargs="+", action="extend", default=[], metavar="VARIANT",
                   help="only these variants (default: all; the drift is estimated across the ones kept)")
    p.add_argument("--last", type=int, default=DEFAULT_LAST, metavar="N",
                   help="only the newest N runs of the branch (0 = all; default %(default)s)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--simulated", dest="simulated", action="store_const", const=True, default=None,
                      help="only runs on the virtual bench (needed when the branch has both kinds)")
    kind.add_argument("--real", dest="simulated", action="store_const", const=False,
                      help="only runs on real hardware")
    p.add_argument("--keep-shared-drift", action="store_true",
                   help="do not cancel the drift shared by all variants of a night (finds changes common to "
                   "all variants, less sensitive)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the change points as JSON")
    p.add_argument("--fail-on-change", action="store_true",
                   help="exit 1 when the newest run confirms a change (new since the run before: a nightly job "
                   "fails once per change, not every night after it)")
    p.set_defaults(func=run_changes)


def run_changes(args: argparse.Namespace) -> int:
    """Detect, print one line per change point, write the JSON; the exit status as described above."""
    from hil.gate.changepoints import ALPHA, detect, select_runs
    from hil.results import ResultsStore

    for name in args.metric:
        metric(name)
    if args.last < 0:
        raise HilError(f"--last {args.last}: must be 0 (all runs) or a positive number")
    with ResultsStore(args.db, readonly=True) as store:
        history = store.history()
    if args.branch not in set(history["git_branch"].dropna()):
        known = ", ".join(sorted({str(b) for b in history["git_branch"].dropna()})) or "none"
        raise HilError(f"no run of branch {args.branch} in {args.db}; branches: {known}")
    last = args.last or None
    kept = select_runs(history, branch=args.branch, simulated=args.simulated, last=last)
    changes = detect(history, branch=args.branch, simulated=args.simulated, last=last,
                     metrics=args.metric or None, variants=args.variant or None,
                     cancel_shared=not args.keep_shared_drift)
    run_ids = sorted(int(r) for r in kept["run_id"].unique())
    simulated = bool(kept["simulated"].any())
    new = _new_since_previous_run(history, changes, run_ids, args, last)
    for c in changes:
        print(c.describe() + ("  NEW: confirmed by the newest run" if c in new else ""))
    if not changes:
        kind = " (simulated)" if simulated else ""
        print(f"no change point in {len(run_ids)} runs of branch {args.branch}{kind}")
    if args.json:
        doc = {"db": str(args.db), "branch": args.branch, "simulated": simulated, "runs": run_ids,
               "alpha": ALPHA, "shared_drift_cancelled": not args.keep_shared_drift,
               "changes": [{**c.to_dict(), "new": c in new} for c in changes]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if args.fail_on_change and new else 0


def _new_since_previous_run(history, changes: list, run_ids: list[int], args: argparse.Namespace,
                            last: int | None) -> list:
    """The confirmed changes the history without its newest run did not hold confirmed (same variant and
    metric, first run after it within two runs): what the newest run brought."""
    from hil.gate.changepoints import MIN_RUNS, detect

    confirmed = [c for c in changes if c.confirmed]
    if not confirmed or len(run_ids) <= MIN_RUNS:
        return confirmed
    before = history[history["run_id"] != run_ids[-1]]
    previous = detect(before, branch=args.branch, simulated=args.simulated, last=last,
                      metrics=args.metric or None, variants=args.variant or None,
                      cancel_shared=not args.keep_shared_drift)
    pos = {r: i for i, r in enumerate(run_ids)}
    known = [(p.variant, p.metric, pos.get(p.run_id_after)) for p in previous if p.confirmed]
    return [c for c in confirmed if not any(
        (v, m) == (c.variant, c.metric) and i is not None and abs(i - pos[c.run_id_after]) <= 2
        for v, m, i in known)]
