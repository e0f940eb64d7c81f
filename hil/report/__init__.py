"""The HIL run report: report.md, self-contained report.html, results.csv and PNGs, rebuilt from the database.

`write_report(store, run, out_dir)` writes a run's report; `summary_table(store, run)` is the plain-text
table the pytest plugin prints at the end of the session.
"""

from hil.report.writer import summary_table, write_report

__all__ = ["summary_table", "write_report"]
