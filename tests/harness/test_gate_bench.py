"""The merge gate end to end on the virtual bench with its default bench noise on: real campaigns record ten
baseline runs on main, candidates are judged against them, an injected regression is re-measured and caught.

Each session's noise seed is pinned (--noise-seed), and the re-measurements derive theirs from the candidate's,
so the test replays bit for bit; how often the gate errs over many seeds is benchmarks/bench_gate.py's job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hil.campaign import CampaignOptions, remeasurer, run
from hil.gate import compare, parse_tolerances
from hil.gate.stats import SHIFT
from hil.results import ResultsStore
from tests.conftest import TINY_CONFIG
from tests.harness.helpers import BUDGETS, ROOT

# Seven deployable variants: enough for each session's shared drift to be estimated and removed.
MATRIX = {**TINY_CONFIG, "variants": {"baseline": ["no_opt", "int_fallback", "int8"], "pruned": ["int8"],
                                      "qat": ["int8"], "clustered": ["int8"], "distilled": ["int8"]}}
TOLERANCES = ["latency_ms=5%", "energy_mj=5%", "power_mw=5%", "accuracy=0.5pp", "flash_kb=1%", "arena_kb=1%"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the matrix built, budgets, and the repository's bench (one board, noise as shipped)."""
    ws = tmp_path_factory.mktemp("gate-lab")
    (ws / "variants.yaml").write_text(yaml.safe_dump(MATRIX))
    (ws / "budgets.yaml").write_text(yaml.safe_dump({**BUDGETS, "variants": {}}))
    bench = yaml.safe_load((ROOT / "bench.yaml").read_text())
    assert bench["virtual"]["noise"]["enabled"] is True  # the shipped default this test is about
    bench["boards"] = bench["boards"][:1]
    (ws / "bench.yaml").write_text(yaml.safe_dump(bench))
    return ws


def options(ws: Path, **kw) -> CampaignOptions:
    return CampaignOptions(bench=ws / "bench.yaml", budgets=ws / "budgets.yaml", models_config=ws / "variants.yaml",
                           models_dir=ws / "models", results_db=ws / "results.sqlite", report_dir=ws / "report",
                           trials=3, window=0.2, warmup=1, accuracy_samples=10, **kw)


def session(ws: Path, branch: str, monkeypatch: pytest.MonkeyPatch, **kw) -> int:
    monkeypatch.setenv("HIL_GIT_BRANCH", branch)
    finish, _ = run(options(ws, **kw), progress=lambda _: None)
    assert finish.run_id is not None
    return finish.run_id


@pytest.mark.slow
def test_ten_baselines_then_unchanged_candidates_and_an_injected_regression(lab: Path, monkeypatch) -> None:
    base = [session(lab, "main", monkeypatch, noise_seed=1000 + k) for k in range(10)]
    tol = parse_tolerances(TOLERANCES)
    with ResultsStore(lab / "results.sqlite") as store:
        energies = {m.value for r in base for m in store.measurements(r)
                    if (m.variant, m.metric) == ("baseline-int8", "energy_mj")}
        assert len(energies) == 10  # every session drew its own bench drift
        seeds = {store.run(r).meta["noise"]["seed"] for r in base}
        assert len(seeds) == 10 and all(store.run(r).meta["noise"]["enabled"] for r in base)
        for k in range(5):
            cand = session(lab, "feature", monkeypatch, noise_seed=2000 + k)
            result = compare(store, cand, "main", tol)
            print(result.summary())  # shown with pytest -s
            assert not [r for r in result.rows if r.verdict == "REGRESSION"], result.table()
            assert [r.id for r in result.window] == base

        cand = session(lab, "feature", monkeypatch, inject=["pruned-int8:energy=1.05"], noise_seed=3000)
        assert store.run(cand).meta["inject"] == [{"variant": "pruned-int8", "kind": "energy", "factor": 1.05}]
        result = compare(store, cand, "main", tol, remeasure=2,
                         measure=remeasurer(store, cand, progress=lambda _: None))
        print(result.table())
        bad = {(r.variant, r.metric) for r in result.rows if r.verdict == "REGRESSION"}
        assert ("pruned-int8", "energy_mj") in bad, result.table()
        assert {v for v, _ in bad} == {"pruned-int8"} and SHIFT not in {v for v, _ in bad}
        row = next(r for r in result.rows if (r.variant, r.metric) == ("pruned-int8", "energy_mj"))
        assert row.low > 0 and row.low < 5.0 < row.high, result.table()
        assert result.failed and len(result.sessions) <= 3
        seeds = set()
        for extra in result.sessions[1:]:  # re-measurements carry the candidate's injection and settings
            r = store.run(extra)
            assert r.flags["remeasure_of"] == cand and r.meta["inject"] == store.run(cand).meta["inject"]
            seeds.add(r.meta["noise"]["seed"])
        assert len(seeds) == len(result.sessions) - 1 and 3000 not in seeds  # new sessions, new drifts
