"""`hil measure`: measure variants on the bench and record them, without pytest (a thin layer over hil.campaign).

Exit status: 0 every budget passed, 1 a budget or cross-check failed (or the gate did), 2 a user error.
"""

from __future__ import annotations

import argparse
import sys

from hil.campaign import OPTIONS, CampaignOptions


def run_measure(args: argparse.Namespace) -> int:
    """Measure, judge, record, report; print one line per variant and where everything went."""
    from hil.bench import load_bench
    from hil.campaign import run

    options = CampaignOptions.from_values(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")))
    say = lambda line: print(f"[hil] {line}", flush=True)  # noqa: E731
    if load_bench(options.bench).lab is not None:  # a shared lab: places through labgrid, a queue of variants
        from hil.lab.campaign import run_on_lab

        finish, verdicts, queue = run_on_lab(options, progress=say)
        for name, stats in queue.places.items():
            print(f"place {name} ({stats.where.host}, board {stats.where.board_id}): {stats.items} variant(s), "
                  f"busy {stats.busy_fraction:.0%}" + (f"; LOST: {stats.lost}" if stats.lost else ""))
    else:
        finish, verdicts = run(options, progress=say)
    failed = False
    for variant, by_metric in verdicts.items():
        bad = [v.message for v in by_metric.values() if v.failed]
        reasons = list(dict.fromkeys(bad))  # a variant that failed as a whole gives every metric one reason
        skipped = [v.message for v in by_metric.values() if v.outcome == "skipped"]
        if bad:
            failed = True
            print(f"{variant}: FAILED {len(bad)}/{len(by_metric)}: " + "; ".join(reasons))
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
    for flag, kwargs in OPTIONS:
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=run_measure)
