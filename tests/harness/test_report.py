"""The run report: files, self-contained HTML, simulated marking, ranking, results.csv and `hil report`.

The database is a real results store filled the way the plugin fills it: figures from real analyses
(`hil.power.analyze`) of synthetic 8-bit captures saved as real Waveform .npz files, and a real factory
folder (the tiny matrix of tests/conftest.py).
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hil.cli import main
from hil.power import analyze
from hil.report import summary_table, write_report
from hil.report.plots import pareto_front, shunt_power_mw
from hil.results import ResultsStore
from instruments.waveform import Waveform
from models.artifacts import load_artifacts
from models.objective import rank
from tests.harness.power_synth import SUPPLY, R, make_capture

SLOW = pytest.mark.slow  # the tests on `bench_db` build the tiny factory matrix (shared with other tests)

ENERGY_BUDGET_MJ = 2.0  # ~0.75 W while inferring: the float32 variants (4 ms) fail it, the int8 ones pass


def _record_variant(store: ResultsStore, run: int, row: dict, folder: Path, slower: float,
                    largest: float) -> None:
    """Capture, analyze, save traces and record every figure of one variant, as the plugin does."""
    name = row["variant"]
    width = (1.0 + 3.0 * row["size_bytes"] / largest) * slower / 1e3  # latency follows size, 1 to 4 ms
    shunt, marker, _ = make_capture(width=width, period=width * 1.6, duration=width * 1.6 * 6, dt=width / 200,
                                    seed=len(name))
    rep = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    assert rep.valid, rep.reason
    for kind, obj in (("trace_shunt", shunt), ("trace_marker", marker)):
        store.add_artifact(run, name, kind, obj.save(folder / f"{name}-{kind}.npz"))
    (folder / f"{name}-power.json").write_text(json.dumps(rep.to_dict()))
    store.add_artifact(run, name, "power", folder / f"{name}-power.json")
    acc = row["accuracy_tflm"] if row["accuracy_tflm"] is not None else row["accuracy"]
    figures = {
        "latency_ms": (rep.pulse_width_ms.mean, 0.01), "latency_p95_ms": (rep.pulse_width_ms.max, 0.02),
        "power_mw": (rep.avg_power_mw, 1.5), "dynamic_power_mw": (rep.dynamic_power_mw, 0.5),
        "energy_mj": (rep.energy_per_inference_mj.mean, 0.001), "accuracy": (100 * acc, None),
        "accuracy_host": (100 * row["accuracy"], None), "flash_kb": (row["size_bytes"] / 1024, None),
        "arena_kb": (row["arena_bytes"] / 1024, None),
    }
    for metric_name, (value, spread) in figures.items():
        store.record(run, name, metric_name, value, trials=5 if spread else 1, spread=spread)


def _fill_run(store: ResultsStore, models_dir: Path, table: pd.DataFrame, folder: Path, *, simulated: bool,
              slower: dict[str, float] | None = None, with_outcomes: bool = False) -> int:
    """One complete run as the plugin records it: measurements (skipped rows for what TFLM cannot run),
    artifacts, budgets and phases in meta; with `with_outcomes` also the test outcomes with messages."""
    folder.mkdir(parents=True, exist_ok=True)
    run = store.start_run(bench="bench.yaml", simulated=simulated, flags={"trials": 5, "session": "abc"},
                          git_commit="0123456789abcdef", git_branch="main")
    budgets, verdicts = {}, {}
    arts = load_artifacts(models_dir)
    for row in table.to_dict("records"):
        name = row["variant"]
        art = arts[name]
        store.record_variant(run, name, sha256=art.sha256, station="esp32-0", factory=art.row)
        store.add_artifact(run, name, "roc", shutil.copyfile(art.roc_plot, folder / f"{name}-roc.png"))
        budgets[name] = {"energy_mj": {"min": None, "max": ENERGY_BUDGET_MJ}, "accuracy": {"min": 20.0, "max": None}}
        if not row["tflm_ok"]:
            for m in budgets[name]:
                store.record(run, name, m, None, skipped=True, reason=f"TFLM cannot run it: {row['tflm_error']}")
            continue
        _record_variant(store, run, row, folder, (slower or {}).get(name, 1.0), float(table["size_bytes"].max()))
        values = {m.metric: m.value for m in store.measurements(run) if m.variant == name}
        energy_ok = values["energy_mj"] <= ENERGY_BUDGET_MJ
        verdicts[(name, "energy_mj")] = (
            "passed" if energy_ok else "failed",
            "" if energy_ok else f"test says: {name} energy_mj {values['energy_mj']:.4g} mJ over budget",
        )
        verdicts[(name, "accuracy")] = ("passed" if values["accuracy"] >= 20 else "failed", "")
    store.update_meta(run, factory=arts.meta, bench_name="virtual", board_id="esp32-0",
                      scope_idn="RIGOL TECHNOLOGIES,DS1104Z,SIM,00.04", firmware="fw-abc123", simulated=simulated,
                      budgets=budgets, phases_gw0={"power_s": 1.5, "accuracy_s": 2.0}, phases_gw1={"power_s": 2.5})
    if with_outcomes:
        for (name, metric_name), (outcome, message) in verdicts.items():
            store.record_outcome(run, name, metric_name, outcome, message, test=f"test_budget[{name}-{metric_name}]")
    store.finish_run(run, "passed")
    return run


@pytest.fixture(scope="module")
def bench_db(tiny_build, tmp_path_factory) -> tuple[Path, dict[str, int], pd.DataFrame]:
    """A results database with a simulated run, a real-hardware-marked run and a slower simulated run."""
    models_dir, table = tiny_build
    root = tmp_path_factory.mktemp("results")
    db = root / "results.sqlite"
    ok = table.loc[table["tflm_ok"].astype(bool), "variant"].tolist()
    with ResultsStore(db) as store:
        runs = {
            "sim": _fill_run(store, models_dir, table, root / "captures-1", simulated=True),
            "real": _fill_run(store, models_dir, table, root / "captures-2", simulated=False, with_outcomes=True),
            "slower": _fill_run(store, models_dir, table, root / "captures-3", simulated=True,
                                slower={ok[0]: 1.5}),
        }
    return db, runs, table


@pytest.fixture(scope="module")
def sim_report(bench_db, tmp_path_factory) -> Path:
    db, runs, _ = bench_db
    with ResultsStore(db) as store:
        return write_report(store, runs["sim"], tmp_path_factory.mktemp("report") / "latest")


@SLOW
def test_report_files_exist_with_a_trace_per_measured_variant(sim_report: Path, bench_db) -> None:
    _, _, table = bench_db
    for name in ("report.md", "report.html", "results.csv", "pareto.png"):
        assert (sim_report / name).stat().st_size > 0, name
    for row in table.to_dict("records"):
        trace = sim_report / f"trace-{row['variant']}.png"
        assert trace.is_file() == bool(row["tflm_ok"]), trace
        assert (sim_report / f"roc-{row['variant']}.png").is_file()
    md = (sim_report / "report.md").read_text()
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):  # markdown references resolve next to it
        assert (sim_report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not list(sim_report.parent.glob(".latest.*")), "temporary folders left behind"


@SLOW
def test_html_is_self_contained(sim_report: Path) -> None:
    page = (sim_report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r"<img src='([^']+)'", page)
    assert len(sources) == len(re.findall(r"<img", page)) >= 3
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


@SLOW
def test_every_variant_appears_and_unrunnable_ones_say_why(sim_report: Path, bench_db) -> None:
    _, _, table = bench_db
    md = (sim_report / "report.md").read_text()
    html = (sim_report / "report.html").read_text()
    results = md.split("## Results")[1].split("## Variant ranking")[0]
    for row in table.to_dict("records"):
        assert f"| {row['variant']} |" in results
        assert row["variant"] in html
        if not row["tflm_ok"]:
            line = next(x for x in results.splitlines() if x.startswith(f"| {row['variant']} |"))
            assert "skipped" in line and str(row["tflm_error"])[:30] in line


@SLOW
def test_failed_budget_names_variant_metric_and_limit(sim_report: Path, bench_db, tmp_path: Path) -> None:
    db, runs, _ = bench_db
    with ResultsStore(db) as store:
        energy = {m.variant: m.value for m in store.measurements(runs["sim"]) if m.metric == "energy_mj" and m.valid}
        real = write_report(store, runs["real"], tmp_path / "real")
    over = [v for v, e in energy.items() if e > ENERGY_BUDGET_MJ]
    assert over and len(over) < len(energy), "the fixture must have passing and failing variants"
    md, real_md = (sim_report / "report.md").read_text(), (real / "report.md").read_text()
    for v in over:
        row = next(x for x in md.splitlines() if x.startswith(f"| {v} |"))
        assert f"FAIL 1/2: energy_mj = {energy[v]:.3f} mJ exceeds budget max {ENERGY_BUDGET_MJ:.3f} mJ |" in row
        assert f"**{v}** `energy_mj` failed: {v} energy_mj = {energy[v]:.3f} mJ exceeds budget max" in md
        assert f"**{v}** `energy_mj` failed: test says: {v} energy_mj" in real_md  # the test's own message
    for v in set(energy) - set(over):
        assert "pass 2/2" in next(x for x in md.splitlines() if x.startswith(f"| {v} |"))


@SLOW
def test_simulated_banner_iff_simulated(bench_db, tmp_path: Path, sim_report: Path) -> None:
    db, runs, _ = bench_db
    with ResultsStore(db) as store:
        real = write_report(store, runs["real"], tmp_path / "real")
    sim_html, real_html = (sim_report / "report.html").read_text(), (real / "report.html").read_text()
    assert "class='banner'" in sim_html and "SIMULATED RUN" in sim_html
    assert "class='banner'" not in real_html and "simulated" not in real_html.lower()
    sim_md = (sim_report / "report.md").read_text()
    captions = re.findall(r"^\*\*(.+)\*\*$|^\*(.+)\*$|^## (.+)$", sim_md, re.M)
    figure_captions = [next(c for c in groups if c) for groups in captions
                       if any(k in "".join(groups) for k in ("power", "energy", "Results", "Ranking"))]
    assert figure_captions and all("simulated" in c.lower() for c in figure_captions), figure_captions


@SLOW
def test_chosen_variant_is_the_best_passing_by_the_corrected_objective(sim_report: Path, bench_db,
                                                                     tiny_build) -> None:
    db, runs, table = bench_db
    with ResultsStore(db) as store:
        run = store.run(runs["sim"])
        values: dict[str, dict[str, float]] = {}
        for m in store.measurements(run.id):
            if m.valid:
                values.setdefault(m.variant, {})[m.metric] = m.value
    failed = {v for v, f in values.items()
              if f["energy_mj"] > ENERGY_BUDGET_MJ or f["accuracy"] < run.meta["budgets"][v]["accuracy"]["min"]}
    rows = [{"variant": v, "size_bytes": table.set_index("variant").loc[v, "size_bytes"],
             "latency_ms": f["latency_ms"], "accuracy": f["accuracy"], "energy_mj": f["energy_mj"]}
            for v, f in values.items()]
    reference = load_artifacts(tiny_build[0]).reference
    ranked = rank(rows, reference)
    expected = next(v for v in ranked["variant"] if v not in failed)
    md = (sim_report / "report.md").read_text()
    assert f"**Chosen variant: {expected}**" in md
    ranking = md.split("## Variant ranking")[1].split("\n## ")[0]
    order = [line.split(" | ")[1] for line in ranking.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert order == ranked["variant"].tolist()


@SLOW
def test_results_csv_matches_the_database(sim_report: Path, bench_db) -> None:
    db, runs, table = bench_db
    with ResultsStore(db) as store:
        run = store.run(runs["sim"])
        stored = {(m.variant, m.metric): m for m in store.measurements(run.id)}
    with (sim_report / "results.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["variant", "metric", "value", "unit", "valid", "reason", "trials", "spread",
                                     "budget_min", "budget_max", "verdict", "simulated"]
        rows = list(reader)
    by_key = {(r["variant"], r["metric"]): r for r in rows}
    assert set(stored) <= set(by_key)
    for key, m in stored.items():
        r = by_key[key]
        assert (r["value"] == "") if m.value is None else math.isclose(float(r["value"]), m.value, rel_tol=1e-12)
        assert (r["unit"], r["valid"], r["reason"], r["trials"], r["simulated"]) == (
            m.unit, str(m.valid), m.reason or "", str(m.trials), "True"), key
        assert (float(r["spread"]) if r["spread"] else None) == m.spread
        limits = run.meta["budgets"][key[0]].get(key[1])
        if limits:
            assert (r["budget_min"], r["budget_max"]) == tuple("" if x is None else str(x)
                                                              for x in (limits["min"], limits["max"]))
            inside = m.valid and (limits["min"] is None or m.value >= limits["min"]) and (
                limits["max"] is None or m.value <= limits["max"])
            assert r["verdict"] == ("skipped" if m.skipped else "passed" if inside else "failed"), key
    skipped = table.loc[~table["tflm_ok"].astype(bool), "variant"].tolist()
    assert skipped, "the tiny matrix has variants TFLM cannot run"
    for name in skipped:
        assert {r["verdict"] for r in rows if r["variant"] == name} == {"skipped"}


@SLOW
def test_baseline_comparison_shows_the_gate_table(bench_db, tmp_path: Path) -> None:
    db, runs, table = bench_db
    slow_variant = table.loc[table["tflm_ok"].astype(bool), "variant"].iloc[0]
    with ResultsStore(db) as store:
        out = write_report(store, runs["slower"], tmp_path / "cmp", baseline=runs["sim"],
                           tolerances=["latency_ms=5%", "energy_mj=5%"])
    md = (out / "report.md").read_text()
    section = md.split("## Merge gate against 1 baseline run(s)")[1].split("\n## ")[0]
    assert "**gate FAILED: 2 REGRESSION of" in section and f"Baseline: runs {runs['sim']}–{runs['sim']}" in section
    failing = [line for line in section.splitlines() if line.startswith("| ") and "REGRESSION" in line]
    assert [line.split(" | ")[:2] for line in failing] == [[f"| {slow_variant}", "latency_ms"],
                                                          [f"| {slow_variant}", "energy_mj"]]
    for line in failing:  # one run on each side has no noise estimate beyond exactness: a point interval
        change, low, high = re.search(r"\| ([+-][\d.]+) % \[([+-][\d.]+), ([+-][\d.]+)\] \|", line).groups()
        assert float(change) > 30 and change.lstrip("+") == low.lstrip("+") == high.lstrip("+"), line
    assert "<details><summary>every figure of run" in section


@SLOW
def test_rewrite_keeps_foreign_files_and_drops_stale_plots(bench_db, tmp_path: Path) -> None:
    db, runs, _ = bench_db
    out = tmp_path / "latest"
    out.mkdir()
    (out / "junit.xml").write_text("<testsuite/>")
    (out / "trace-gone-variant.png").write_bytes(b"old")
    with ResultsStore(db) as store:
        write_report(store, runs["sim"], out)
    assert (out / "junit.xml").read_text() == "<testsuite/>"
    assert not (out / "trace-gone-variant.png").exists()
    assert "[junit.xml](junit.xml)" in (out / "report.md").read_text()
    assert "href=\"junit.xml\"" in (out / "report.html").read_text()


@SLOW
def test_summary_table_has_every_variant_with_units(bench_db) -> None:
    db, runs, table = bench_db
    with ResultsStore(db) as store:
        sim, real = summary_table(store, runs["sim"]), summary_table(store, runs["real"])
    title = sim.splitlines()[0]
    assert f"run {runs['sim']}" in title and "(simulated)" in title
    assert "simulated" not in real.lower()
    for header in ("latency ms", "power mW", "energy/inf mJ", "acc. device %", "arena KB"):
        assert header in sim
    for name in table["variant"]:
        assert re.search(rf"^{re.escape(name)}\s", sim, re.M), name
    assert "chosen variant" in sim


@SLOW
def test_cli_report_exit_codes(bench_db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, runs, _ = bench_db
    out = tmp_path / "cli"
    assert main(["report", "--db", str(db), "--run", str(runs["real"]), "--out", str(out)]) == 0
    assert f"run {runs['real']}" in capsys.readouterr().out and (out / "report.html").is_file()
    for argv in (["--run", "999"], ["--db", str(tmp_path / "missing.sqlite")], ["--tolerance", "energy_mj=5%"]):
        assert main(["report", "--db", str(db), "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hil: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "missing.sqlite").exists() and not (tmp_path / "x").exists()


def test_invalid_and_unmeasured_figures_show_their_reason(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = store.start_run(bench="b.yaml", simulated=False, git_commit="c", git_branch="dev")
        budgets = {"v1": {"energy_mj": {"min": None, "max": 1.0}, "accuracy": {"min": 90, "max": None}}}
        store.update_meta(run, budgets=budgets)
        store.record(run, "v1", "energy_mj", None, valid=False, reason="scope capture invalid: shunt clipped")
        store.record(run, "v1", "latency_ms", 3.0)
        store.record(run, "v2", "latency_ms", 2.0)
        out = write_report(store, run, tmp_path / "out")
        text = summary_table(store, run)
    md = (out / "report.md").read_text()
    row = next(x for x in md.splitlines() if x.startswith("| v1 |"))
    assert "| invalid |" in row
    assert "FAIL 2/2: energy_mj invalid: scope capture invalid: shunt clipped; accuracy not measured" in row
    assert "v1 energy_mj invalid: scope capture invalid: shunt clipped" in md
    assert "**v1** `energy_mj` failed: v1 energy_mj invalid: scope capture invalid: shunt clipped" in md
    assert "Not ranked: v1 (no valid accuracy, energy_mj, size); v2 (" in md
    assert "No ROC curves stored." in md  # this run stored no factory plots; the report does not go looking
    assert "FAIL 2/2" in text and "note: v1 energy_mj invalid" in text


# -- pieces, independent of the database ----------------------------------------------------------------------

def test_pareto_front_is_exactly_the_non_dominated_points() -> None:
    rng = np.random.default_rng(3)
    points = [(float(e), float(a)) for e, a in zip(rng.uniform(0.1, 5, 40), rng.uniform(60, 99, 40), strict=True)]
    front = set(pareto_front(points))

    def dominated(i: int) -> bool:
        e, a = points[i]
        return any((e2 <= e and a2 >= a) and (e2, a2) != (e, a) for e2, a2 in points)

    assert front == {i for i in range(len(points)) if not dominated(i)}


def test_trace_power_agrees_with_the_analysis(tmp_path: Path) -> None:
    shunt, marker, truth = make_capture(shape="shaped")
    rep = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    power = shunt_power_mw(Waveform.load(shunt.save(tmp_path / "s.npz")), rep.to_dict()["parameters"])
    assert math.isclose(float(power.mean()), rep.avg_power_mw, rel_tol=1e-9)
    idle = power[marker.volts < 1.0]
    assert math.isclose(float(np.median(idle)), truth.idle_power_mw, rel_tol=0.01)


@SLOW
def test_report_of_an_old_run_is_unchanged_after_the_variants_are_rebuilt(tiny_build, tmp_path: Path) -> None:
    """The report reads only the database: rebuilding the factory folder differently changes nothing in it."""
    from models.factory import build
    from tests.conftest import TINY_CONFIG, TINY_LIMITS

    models_dir = tmp_path / "models"
    shutil.copytree(tiny_build[0], models_dir)
    table = load_artifacts(models_dir).table()
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = _fill_run(store, models_dir, table, tmp_path / "captures", simulated=True)
        before = write_report(store, run, tmp_path / "before")
        other = {**TINY_CONFIG, "model": {"filters": [2, 4, 4], "dense_units": [8, 8]},
                 "variants": {"baseline": ["int8"]}}
        (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
        build(tmp_path / "other.yaml", models_dir, "digits", cache_dir=tmp_path / "cache", progress=lambda _: None,
              **TINY_LIMITS)
        rebuilt = load_artifacts(models_dir)
        assert list(rebuilt.variants) == ["baseline-int8"]
        assert rebuilt["baseline-int8"].size_bytes != int(table.set_index("variant").loc["baseline-int8", "size_bytes"])
        after = write_report(store, run, tmp_path / "after")
    assert (after / "results.csv").read_text() == (before / "results.csv").read_text()
    assert (after / "report.md").read_text() == (before / "report.md").read_text()
    assert sorted(p.name for p in after.glob("roc-*.png")) == sorted(p.name for p in before.glob("roc-*.png"))


def test_a_run_on_protocol_1_firmware_says_its_lines_carried_no_crc(bench_db, tmp_path: Path) -> None:
    db, runs, _ = bench_db
    with ResultsStore(db) as store:
        store.update_meta(runs["real"], protocol=1)
        old = (write_report(store, runs["real"], tmp_path / "v1") / "report.md").read_text()
        store.update_meta(runs["real"], protocol=2)
        new = (write_report(store, runs["real"], tmp_path / "v2") / "report.md").read_text()
    assert "protocol 1: **reply lines carried no CRC**" in old and "flash firmware that speaks protocol 2" in old
    assert "protocol 2 (every line CRC-checked)" in new and "no CRC" not in new


def test_the_runner_figures_appear_beside_ours_with_the_definition_of_their_window(bench_db, tmp_path: Path) -> None:
    """inferences/s and µJ per inference (hil.measure.runner_figures of the run's latency and energy) get a table of
    their own; on an MLPerf Tiny DUT (protocol 0) its note says the window holds back-to-back inferences."""
    from hil.dut.mlperf_tiny import HELLO_PROTOCOL
    from hil.measure import Figure, runner_figures

    db, runs, _ = bench_db
    run = runs["slower"]
    with ResultsStore(db) as store:
        rows = {}
        for variant in sorted({m.variant for m in store.measurements(run) if m.metric == "latency_ms"}):
            got = {m.metric: m for m in store.measurements(run) if m.variant == variant}
            derived = runner_figures({k: Figure(got[k].value, values=(got[k].value,))
                                      for k in ("latency_ms", "energy_mj")})
            for metric, fig in derived.items():
                store.record(run, variant, metric, fig.value)
            rows[variant] = (got["latency_ms"].value, got["energy_mj"].value)
        ours = (write_report(store, run, tmp_path / "ours") / "report.md").read_text()
        store.update_meta(run, protocol=HELLO_PROTOCOL)
        theirs = (write_report(store, run, tmp_path / "theirs") / "report.md").read_text()
    table = ours[ours.index("**MLPerf Tiny figures (simulated)**"):].split("\n\n")[1].splitlines()
    assert table[0] == "| variant | latency ms | inferences/s | energy/inf mJ | energy/inf µJ |"
    for variant, (ms, mj) in rows.items():
        row = next(r for r in table if r.startswith(f"| {variant} |")).strip("|").split("|")
        assert float(row[2]) == pytest.approx(1e3 / ms, abs=1e-3)
        assert float(row[4].replace(",", "")) == pytest.approx(mj * 1e3, abs=0.5)
    assert "idle gaps between inferences do not count" in ours
    assert "back-to-back inferences, so the loop between two inferences counts" in theirs
    assert "MLPerf Tiny protocol (its lines carry no CRC" in theirs and "flash firmware that speaks" not in theirs
