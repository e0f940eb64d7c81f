"""Change points in the results history (hil.gate.changepoints) and `hil changes`, on real SQLite databases.

Histories are written night by night through `ResultsStore` with the bench's noise model: power figures
nominal * exp(shared night drift + per-variant noise), latency with 0.03 % jitter, arena exact.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hil.cli import main
from hil.errors import HilError
from hil.gate.changepoints import ChangePoint, detect
from hil.report import write_report
from hil.results import ResultsStore

VARIANTS = ("baseline-no_opt", "baseline-int8", "pruned-int8", "pruned-float", "distilled-int8",
            "distilled-float", "clustered-int8", "qat-int8")
NOMINAL = {"energy_mj": 2.0, "latency_ms": 5.0, "arena_kb": 30.0}
NIGHTS, STEP_NIGHT, STEPPED = 24, 16, "pruned-int8"
CV = 0.02


def commit(night: int) -> str:
    """A 40-hex commit id per night, recognisable by its first digits."""
    return f"{night:04d}" + "ab" * 18


def write_history(db: Path, *, seed: int, steps: dict[tuple[str, str], float] | None = None,
                  step_night: int = STEP_NIGHT, nights: int = NIGHTS, branch: str = "main",
                  simulated: bool = True) -> list[int]:
    """One run per night with every variant's figures; `steps` {(variant, metric): percent} from `step_night`."""
    rng = np.random.default_rng(seed)
    sizes = np.linspace(0.5, 2.0, len(VARIANTS))
    runs = []
    with ResultsStore(db) as store:
        for night in range(1, nights + 1):
            run = store.start_run(bench="bench.yaml", simulated=simulated, git_commit=commit(night),
                                  git_branch=branch)
            shared = rng.normal(0, np.sqrt(0.75) * CV)
            for j, variant in enumerate(VARIANTS):
                for name, nominal in NOMINAL.items():
                    if name == "energy_mj":
                        noise = shared + rng.normal(0, np.sqrt(0.25) * CV) + rng.normal(0, 0.003 / np.sqrt(5))
                    elif name == "latency_ms":
                        noise = rng.normal(0, 0.0003)
                    else:
                        noise = 0.0
                    value = nominal * sizes[j] * np.exp(noise)
                    if night >= step_night:
                        value *= 1 + (steps or {}).get((variant, name), 0.0) / 100
                    store.record(run, variant, name, value, trials=5)
            store.finish_run(run, "passed")
            runs.append(run)
    return runs


@pytest.fixture(scope="module")
def step_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A +5 % energy step on pruned-int8 from night 16 of 24."""
    db = tmp_path_factory.mktemp("step") / "results.sqlite"
    return db, write_history(db, seed=7, steps={(STEPPED, "energy_mj"): 5.0})


@pytest.fixture(scope="module")
def flat_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    db = tmp_path_factory.mktemp("flat") / "results.sqlite"
    return db, write_history(db, seed=11)


def history(db: Path) -> pd.DataFrame:
    with ResultsStore(db, create=False) as store:
        return store.history()


def test_step_is_found_for_its_variant_metric_and_commit_range_within_two_nights(step_db) -> None:
    db, runs = step_db
    df = history(db)
    first = runs[STEP_NIGHT - 1]
    for nights_after in (1, 2):  # the nightly job after nights 17 and 18 (the step is in night 16)
        found = detect(df[df["run_id"] <= first + nights_after], branch="main")
        assert [(c.variant, c.metric) for c in found] == [(STEPPED, "energy_mj")], found
    c = found[0]
    assert c.confirmed
    assert (c.run_id_before, c.run_id_after) == (first - 1, first)
    assert (c.commit_before, c.commit_after) == (commit(STEP_NIGHT - 1), commit(STEP_NIGHT))
    assert c.low_pct < 5.0 < c.high_pct and 3.0 < c.size_pct < 7.0
    assert c.worse is True  # more energy is worse


def test_step_in_the_newest_run_is_only_suspected(step_db) -> None:
    db, runs = step_db
    df = history(db)
    found = detect(df[df["run_id"] <= runs[STEP_NIGHT - 1]], branch="main")
    assert all(not c.confirmed for c in found)
    assert all((c.variant, c.metric) == (STEPPED, "energy_mj") for c in found)


def test_flat_history_has_no_change_point_at_any_nightly_look(flat_db) -> None:
    db, runs = flat_db
    df = history(db)
    for last in runs[9:]:
        assert detect(df[df["run_id"] <= last], branch="main") == []


def test_step_shared_by_every_variant_is_drift_unless_asked(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    write_history(db, seed=3, steps={(v, "energy_mj"): 8.0 for v in VARIANTS})
    df = history(db)
    assert detect(df, branch="main") == []
    found = detect(df, branch="main", cancel_shared=False, metrics=["energy_mj"])
    assert {c.variant for c in found} <= set(VARIANTS) and found
    assert all(c.run_id_after == STEP_NIGHT for c in found)


def test_exact_metric_change_and_latency_jitter(tmp_path: Path) -> None:
    """arena_kb has no noise: a 1 % change is found; latency's 0.03 % jitter alone is not a change."""
    db = tmp_path / "results.sqlite"
    write_history(db, seed=5, steps={("qat-int8", "arena_kb"): 1.0})
    found = detect(history(db), branch="main")
    assert [(c.variant, c.metric, c.run_id_after) for c in found] == [("qat-int8", "arena_kb", STEP_NIGHT)]
    assert found[0].size_pct == pytest.approx(1.0, abs=1e-6)


def test_mixed_bench_kinds_and_too_few_runs_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    write_history(db, seed=1, nights=8, simulated=True)
    write_history(db, seed=2, nights=8, simulated=False)
    df = history(db)
    with pytest.raises(HilError, match=r"mixes simulated runs \(1, 2, 3, 4, 5, \.\.\. 8 in all\) and real runs"):
        detect(df, branch="main")
    assert detect(df, branch="main", simulated=False) == []
    with pytest.raises(HilError, match="only 4 runs of branch main with valid figures; .* at least 6"):
        detect(df, branch="main", simulated=True, last=4)


def test_describe_line_names_size_interval_run_and_commits() -> None:
    c = ChangePoint("pruned-int8", "energy_mj", 20, 20, 21, "1a2b3c4d5e", "5d6e7f8a9b", 5.12, 3.9, 6.3, True)
    assert c.describe() == "pruned-int8 energy_mj +5.1 % [+3.9, +6.3] from run 21 (commits 1a2b3c4..5d6e7f8)"
    suspected = ChangePoint("v", "latency_ms", 3, 3, 4, "a" * 8, "b" * 8, -2.0, -3.0, -1.0, False)
    assert suspected.describe().endswith("suspected: newest run, not confirmed yet")
    assert suspected.worse is False


def test_cli_prints_the_change_and_fails_on_it_when_asked(step_db, tmp_path: Path, capsys) -> None:
    db, runs = step_db
    out_json = tmp_path / "changes.json"
    assert main(["changes", "--db", str(db), "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{STEPPED} energy_mj +")
    assert f"from run {runs[STEP_NIGHT - 1]} (commits {commit(STEP_NIGHT - 1)[:7]}..{commit(STEP_NIGHT)[:7]})" \
        in lines[0]
    doc = json.loads(out_json.read_text())
    assert doc["runs"] == runs and [c["variant"] for c in doc["changes"]] == [STEPPED]
    assert main(["changes", "--db", str(db), "--fail-on-change"]) == 0  # confirmed nights ago: failed then
    assert main(["changes", "--db", str(db), "--fail-on-change", "--metric", "latency_ms"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"no change point in {NIGHTS} runs of branch main (simulated)"


def test_fail_on_change_fails_the_night_that_confirms_the_change_and_not_the_nights_after(step_db, tmp_path: Path,
                                                                                          capsys) -> None:
    """A nightly job on the history as it grew: exit 1 exactly once, on the run that confirmed the step."""
    import shutil
    import sqlite3

    db, runs = step_db
    codes = []
    for night in range(STEP_NIGHT, NIGHTS + 1):
        grown = tmp_path / f"night-{night}.sqlite"
        shutil.copyfile(db, grown)
        with sqlite3.connect(grown) as c:
            c.execute("DELETE FROM trials WHERE run_id > ?", (runs[night - 1],))
            c.execute("DELETE FROM measurements WHERE run_id > ?", (runs[night - 1],))
            c.execute("DELETE FROM runs WHERE id > ?", (runs[night - 1],))
        codes.append(main(["changes", "--db", str(grown), "--fail-on-change"]))
        out = capsys.readouterr().out
        assert ("NEW: confirmed by the newest run" in out) == (codes[-1] == 1), out
    assert codes.count(1) == 1 and codes.index(1) <= 2, codes


def test_cli_flat_history_and_errors(flat_db, tmp_path: Path, capsys) -> None:
    db, _ = flat_db
    assert main(["changes", "--db", str(db), "--fail-on-change"]) == 0
    assert capsys.readouterr().out == f"no change point in {NIGHTS} runs of branch main (simulated)\n"
    cases = [
        (["--last", "3"], "hil: error: only 3 runs of branch main with valid figures; change-point detection "
                          "needs at least 6"),
        (["--metric", "energy_mJ"], "hil: error: unknown metric 'energy_mJ'"),
        (["--branch", "dev"], "hil: error: no run of branch dev in"),
        (["--last", "-1"], "hil: error: --last -1: must be 0"),
    ]
    for extra, message in cases:
        assert main(["changes", "--db", str(db), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    assert main(["changes", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert capsys.readouterr().err.startswith("hil: error: ")


# -- the report's trend plots ------------------------------------------------------------------------------

def _embedded(html: str, png: Path) -> bool:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii") in html


def test_report_has_a_trend_plot_per_gated_metric_embedded_with_the_change(step_db, tmp_path: Path) -> None:
    db, runs = step_db
    with ResultsStore(db) as store:
        out = write_report(store, runs[-1], tmp_path / "default")
        gated = write_report(store, runs[-1], tmp_path / "gated", baseline=runs[-2], tolerances=["arena_kb=2"])
    pngs = sorted(p.name for p in out.glob("trend-*.png"))
    assert pngs == ["trend-energy_mj.png", "trend-latency_ms.png"]  # no tolerances: energy and latency
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert f"## Trends over the last {min(NIGHTS, 20)} runs (simulated)" in md
    for name in pngs:
        assert f"]({name})" in md and _embedded(html, out / name)
    line = next(c.describe() for c in detect(history(db), branch="main", last=20, metrics=["energy_mj", "latency_ms"]))
    assert f"`{line}`" in md and line.startswith(f"{STEPPED} energy_mj")
    assert sorted(p.name for p in gated.glob("trend-*.png")) == ["trend-arena_kb.png"]


def test_report_of_an_old_run_shows_only_the_runs_up_to_it(step_db, tmp_path: Path) -> None:
    db, runs = step_db
    with ResultsStore(db) as store:
        out = write_report(store, runs[9], tmp_path / "old", trend_runs=8)
    md = (out / "report.md").read_text()
    assert f"Runs {runs[2]}–{runs[9]}: the simulated runs of branch `main`" in md
    assert "No change point in energy_mj, latency_ms over these runs." in md


def test_report_of_a_first_run_says_there_is_no_trend_yet(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    runs = write_history(db, seed=1, nights=1)
    with ResultsStore(db) as store:
        out = write_report(store, runs[0], tmp_path / "first")
    assert not list(out.glob("trend-*.png"))
    assert "No trend: 1 simulated run(s) of branch `main`" in (out / "report.md").read_text()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_trend_plots_render_in_headless_chromium(step_db, tmp_path: Path) -> None:
    """The HTML opens offline in a browser and the embedded trend PNGs are drawn (their 'this run' band)."""
    from PIL import Image

    db, runs = step_db
    with ResultsStore(db) as store:
        out = write_report(store, runs[-1], tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,4000", (out / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    band = np.array([249, 227, 175])  # WINDOW_COLOR at alpha 0.45 on white: only the trend plots use it here
    assert (np.abs(pixels - band).max(axis=1) <= 4).sum() > 2000


def test_series_with_values_around_zero_report_the_change_in_the_unit() -> None:
    """meter_vs_scope_energy_pct sits around 0: a step is given in percentage points, not in % of ~0."""
    rng = np.random.default_rng(0)
    rows = [{"run_id": r, "git_commit": f"c{r:02d}", "git_branch": "main", "simulated": True, "variant": f"v{v}",
             "metric": "meter_vs_scope_energy_pct", "value": rng.normal(0, 0.3) + (2.0 if v == 1 and r >= 12 else 0),
             "valid": True} for r in range(1, 21) for v in range(5)]
    (c,) = detect(pd.DataFrame(rows), branch="main")
    assert (c.variant, c.run_id_after, c.commit_before, c.commit_after) == ("v1", 12, "c11", "c12")
    assert c.low < 2.0 < c.high and np.isnan(c.size_pct)
    assert c.describe().startswith(f"v1 meter_vs_scope_energy_pct {c.after - c.before:+.4g} pp [")
