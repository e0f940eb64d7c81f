"""The report's table of the reference study's six variants: its figures beside the run's, six rows."""

from __future__ import annotations

from pathlib import Path

from hil.report import data as report_data
from hil.report import write_report
from hil.report.study import STUDY_VARIANTS, study_table
from hil.results import ResultsStore
from models.registry import DEFAULT_CONFIG, load_registry

# Figures of a run, by variant: (latency ms, active power mW, size bytes, gzip bytes)
RUN = {
    "baseline-no_opt": (122.8, 1948.3, 658852, 605664),
    "baseline-int_fallback": (106.1, 1439.9, 178152, 167433),
    "baseline-int8": (106.0, 1395.1, 177816, 167300),
    "pruned-no_opt": (122.9, 1936.0, 658852, 359293),
    "pruned-int_fallback": (106.2, 1373.9, 178152, 113112),
    "pruned-int8": (106.3, 1418.6, 177816, 112966),
}


def _store(path: Path, aliases: dict[str, str] | None, skip: str | None = None) -> ResultsStore:
    store = ResultsStore(path)
    run = store.start_run(bench="bench.yaml", simulated=True, git_commit="c", git_branch="main")
    if aliases is not None:
        store.update_meta(run, factory={"reference": "baseline-no_opt", "aliases": aliases})
    for name, (latency, power, size, gz) in RUN.items():
        store.record_variant(run, name, sha256=None, station="esp32-0",
                             factory={"size_bytes": size, "gzip_bytes": gz, "tflm_ok": name != skip})
        if name == skip:
            store.record(run, name, "latency_ms", None, skipped=True, reason="TFLM cannot run it: hybrid")
            continue
        store.record(run, name, "latency_ms", latency)
        store.record(run, name, "active_power_mw", power)
    store.finish_run(run, "passed")
    return store


def test_six_rows_the_study_beside_the_run_by_the_shipped_aliases(tmp_path: Path) -> None:
    aliases = dict(load_registry(DEFAULT_CONFIG).config.aliases)
    with _store(tmp_path / "r.sqlite", aliases) as store:
        table = study_table(report_data.load(store, "latest"))
        out = write_report(store, "latest", tmp_path / "report", trend_runs=0)
    assert table is not None
    rows = {r[0]: r for r in table.rows}
    assert list(rows) == list(STUDY_VARIANTS)
    assert all(r[7] not in ("–", "skipped", "not in this run") for r in table.rows)  # six measured latencies
    default_opt = rows["cnn_not_optimised-default_opt"]
    assert default_opt[1] == "baseline-int_fallback"
    assert default_opt[2:] == ["21.3", "174.0", "15.6", "163.5", "64.70", "106.10", "1237.0", "1439.9"]
    assert rows["cnn_pruned-default_opt"][1:] == ["pruned-int_fallback", "21.3", "174.0", "8.3", "110.5", "64.00",
                                                  "106.20", "1468.0", "1373.9"]
    md = (out / "report.md").read_text()
    assert "## The reference study's six variants (simulated)" in md
    assert md.count("| cnn_") == 6


def test_the_map_stored_with_the_run_wins_and_old_runs_use_the_shipped_one(tmp_path: Path) -> None:
    old_map = {"cnn_not_optimised-default_opt": "baseline-int8"}  # a run measured with another map
    with _store(tmp_path / "a.sqlite", old_map) as store:
        rows = {r[0]: r for r in study_table(report_data.load(store, "latest")).rows}
    assert rows["cnn_not_optimised-default_opt"][1] == "baseline-int8"
    assert rows["cnn_pruned-default_opt"][1:4] == ["–", "21.3", "not in this run"]
    with _store(tmp_path / "b.sqlite", None, skip="pruned-int_fallback") as store:
        table = study_table(report_data.load(store, "latest"))
    rows = {r[0]: r for r in table.rows}
    assert rows["cnn_pruned-default_opt"][1] == "pruned-int_fallback"
    assert rows["cnn_pruned-default_opt"][7] == "skipped"
    assert any("cnn_pruned-default_opt (pruned-int_fallback) skipped: TFLM cannot run it" in n for n in table.notes)


def test_no_study_section_for_a_run_without_any_of_the_six(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
        store.record(run, "distilled-int8", "latency_ms", 32.1)
        assert study_table(report_data.load(store, run)) is None
