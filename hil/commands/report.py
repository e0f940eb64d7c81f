"""`hil report`: rebuild the run report (report.md, report.html, results.csv, PNGs) from the results database."""

from __future__ import annotations

import argparse

from hil.errors import HilError
from hil.results import DEFAULT_RESULTS_DB


def run_report(args: argparse.Namespace) -> int:
    """Write the report of one run and print where it went."""
    from hil.report import write_report
    from hil.results import ResultsStore

    if args.tolerance and args.baseline is None:
        raise HilError("--tolerance applies to the baseline comparison; give --baseline REF as well")
    with ResultsStore(args.db, readonly=True) as store:
        out = write_report(store, args.run, args.out, baseline=args.baseline, tolerances=args.tolerance)
        run_id = store.resolve(args.run)
    print(f"report of run {run_id} written to {out}/report.html, {out}/report.md and {out}/results.csv")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil report` to the CLI."""
    p = subparsers.add_parser(
        "report",
        help="rebuild the run report (markdown, self-contained HTML, CSV, plots) from the results database",
        description="Write report.md, report.html (images embedded), results.csv and the PNG plots of one run "
        "into --out, replacing the previous report there (other files such as junit.xml are kept).",
    )
    p.add_argument("--db", default=DEFAULT_RESULTS_DB, help="results database (default: %(default)s)")
    p.add_argument("--run", default="latest", metavar="REF",
                   help="run id, 'latest' or 'latest-main' (default: %(default)s)")
    p.add_argument("--out", default="reports/latest", help="report folder (default: %(default)s)")
    p.add_argument("--baseline", default=None, metavar="REF",
                   help="also compare with this run (id, 'latest' or 'latest-main'), as `hil gate` does")
    p.add_argument("--tolerance", nargs="+", action="extend", default=[], metavar="METRIC=TOL",
                   help="gate tolerances for the comparison, e.g. energy_mj=5%% accuracy=0.5pp")
    p.set_defaults(func=run_report)
