"""Merge gate on real results databases: windows of noisy sessions, intervals, verdicts over the whole matrix,
re-measurement and policy, and the inputs it refuses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hil.errors import HilError
from hil.gate import compare, parse_tolerance, parse_tolerances
from hil.gate.stats import SHIFT
from hil.results import ResultsStore
from hil.sim.noise import NoiseModel

# The default matrix's deployable variants with figures of the virtual bench's scale.
VARIANTS = ["baseline-int8", "baseline-int_fallback", "baseline-no_opt", "clustered-int8", "clustered-int8_lut",
            "clustered-no_opt", "distilled-int8", "distilled-no_opt", "pruned-int8", "pruned-no_opt", "qat-int8",
            "qat-int_fallback"]
NOISY = ("energy_mj", "power_mw")
TOLERANCES = ["energy_mj=5%", "power_mw=5%", "latency_ms=5%", "accuracy=0.5pp", "arena_kb=2"]
NOISE = NoiseModel(between_run_cv=0.02, shared_fraction=0.75, trial_cv=0.003)


def figures(i: int) -> dict[str, float]:
    return {"latency_ms": 10.0 + 3 * i, "energy_mj": 12.0 + 2 * i, "power_mw": 900.0 + 20 * i,
            "accuracy": 97.0 + 0.1 * i, "arena_kb": 20.0 + i}


def record_run(store: ResultsStore, seed: int, *, branch: str = "main", change: dict | None = None,
               variants: list[str] = VARIANTS, noise: NoiseModel = NOISE, simulated: bool = True,
               flags: dict | None = None, remeasure_of: int | None = None, trials: int = 5) -> int:
    """One session of the matrix with bench noise drawn from `seed`; `change` {(variant, metric): factor}."""
    fl = {"trials": trials, **(flags or {})}
    if remeasure_of is not None:
        fl["remeasure_of"] = remeasure_of
    run = store.start_run(bench="bench.yaml", simulated=simulated, git_commit=f"c{seed:07x}", git_branch=branch,
                          flags=fl)
    for v in variants:
        i = VARIANTS.index(v)
        gains = [noise.gain(seed, v, t) for t in range(trials)]
        for name, x in figures(i).items():
            x *= (change or {}).get((v, name), 1.0)
            vals = [x * g for g in gains] if name in NOISY else [x]
            store.record(run, v, name, float(np.median(vals)), trials=len(vals), values=vals)
    store.finish_run(run, "passed")
    return run


def window(store: ResultsStore, n: int = 10, **kw) -> list[int]:
    return [record_run(store, 1000 + k, **kw) for k in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def verdicts(result) -> dict[tuple[str, str], str]:
    return {(r.variant, r.metric): r.verdict for r in result.rows}


def test_an_unchanged_candidate_against_ten_noisy_baselines_has_no_regression(store: ResultsStore) -> None:
    window(store)
    for seed in range(5):  # five candidate sessions, each with its own bench drift
        run = record_run(store, seed, branch="feature")
        result = compare(store, run, "main", parse_tolerances(TOLERANCES))
        assert not [r for r in result.rows if r.verdict == "REGRESSION"], result.table()
        assert {r.verdict for r in result.rows if r.metric in ("accuracy", "arena_kb")} == {"ok"}
        rows = [r for r in result.rows if r.metric == "energy_mj" and r.variant != SHIFT]
        assert len(rows) == len(VARIANTS) and all(r.low < 0 and r.verdict in ("ok", "INCONCLUSIVE") for r in rows)


def test_five_percent_more_energy_on_one_variant_is_a_regression_of_that_variant_only(store: ResultsStore) -> None:
    window(store)
    run = record_run(store, 7, branch="feature", change={("pruned-int8", "energy_mj"): 1.05})
    result = compare(store, run, "main", parse_tolerances(TOLERANCES))
    bad = [(r.variant, r.metric) for r in result.rows if r.verdict == "REGRESSION"]
    assert bad == [("pruned-int8", "energy_mj")], result.table()
    row = next(r for r in result.rows if (r.variant, r.metric) == ("pruned-int8", "energy_mj"))
    assert 0 < row.low < 5.0 < row.high and row.low < row.change_pct < row.high
    assert result.failed and "1 REGRESSION" in result.summary()
    assert "pruned-int8 energy_mj worse by" in row.reason and "+5.0" not in result.summary()


def test_exact_figures_are_compared_exactly_in_their_own_unit(store: ResultsStore) -> None:
    window(store, 4)
    run = record_run(store, 3, branch="feature", change={("qat-int8", "arena_kb"): 1.2,
                                                         ("distilled-int8", "accuracy"): 0.99,
                                                         ("clustered-int8", "arena_kb"): 0.8,
                                                         ("pruned-int8", "arena_kb"): 1 - 1e-9})
    result = compare(store, run, "main", parse_tolerances(TOLERANCES))
    v = verdicts(result)
    assert v[("qat-int8", "arena_kb")] == "REGRESSION" and v[("distilled-int8", "accuracy")] == "REGRESSION"
    arena = next(r for r in result.rows if (r.variant, r.metric) == ("qat-int8", "arena_kb"))
    assert arena.interval_unit == "KB" and not arena.relative
    assert arena.low == arena.high == pytest.approx(0.2 * (20 + 10))
    assert v[("baseline-int8", "arena_kb")] == "ok"
    assert v[("clustered-int8", "arena_kb")] == "improved" and v[("pruned-int8", "arena_kb")] == "ok"


def test_a_shift_of_every_variant_is_its_own_row_and_no_variant_is_blamed(store: ResultsStore) -> None:
    window(store)
    run = record_run(store, 11, branch="feature", change={(v, "energy_mj"): 1.06 for v in VARIANTS})
    result = compare(store, run, "main", parse_tolerances(TOLERANCES))
    shift = next(r for r in result.rows if (r.variant, r.metric) == (SHIFT, "energy_mj"))
    assert shift.low < 6.0 < shift.high
    assert not [r for r in result.rows if r.verdict == "REGRESSION" and r.variant != SHIFT], result.table()
    assert shift.verdict in ("REGRESSION", "unresolved")
    assert "Markdown" not in result.markdown() and "| all (shared shift) | energy_mj |" in result.markdown()


def test_the_pull_request_markdown_renders_as_tables(store: ResultsStore) -> None:
    """Rendered with GitHub-flavoured tables: the rows that are not ok, then every row, each cell in place."""
    from markdown_it import MarkdownIt

    window(store)
    run = record_run(store, 7, branch="feature", change={("pruned-int8", "energy_mj"): 1.05})
    result = compare(store, run, "main", parse_tolerances(TOLERANCES))
    html = MarkdownIt("commonmark").enable("table").render(result.markdown())
    assert html.count("<table>") == 2 and html.startswith("<h3>")
    notable = html.split("<table>")[1]
    cells = [row.split("<td>")[1:] for row in notable.split("<tr>")[2:]]
    assert ["pruned-int8</td>", "energy_mj</td>"] == [c.strip() for c in cells[0][:2]]
    assert all(len(row) == 7 for row in cells) and "<strong>REGRESSION</strong>" in notable
    every = html.split("<table>")[2]
    assert every.count("<tr>") == 1 + len(result.rows)


def test_inconclusive_variants_are_remeasured_as_new_sessions_until_decided(store: ResultsStore) -> None:
    window(store)
    run = record_run(store, 21, branch="feature", change={("clustered-int8", "energy_mj"): 1.045})
    tol = parse_tolerances(TOLERANCES)
    first = compare(store, run, "main", tol)
    asked: list[list[str]] = []

    def measure(variants: list[str]) -> int:
        asked.append(variants)
        return record_run(store, 100 + len(asked), branch="feature", variants=variants, remeasure_of=run,
                          change={("clustered-int8", "energy_mj"): 1.045})

    result = compare(store, run, "main", tol, remeasure=3, measure=measure)
    unsure = {r.variant for r in first.rows if r.verdict == "INCONCLUSIVE"}
    assert asked and set(asked[0]) >= unsure and len(asked[0]) >= 6  # the unsure ones, plus anchors
    assert result.sessions == [run, *range(run + 1, run + 1 + len(asked))]
    assert verdicts(result)[("clustered-int8", "energy_mj")] == "REGRESSION", result.table()
    # the re-measurements belong to the run: never a baseline, and found again by a later look, also when the
    # newest run (`--run latest`) is one of them
    again = compare(store, "latest", "main", tol)
    assert again.run.id == run and again.sessions == result.sessions and len(again.window) == 10


@pytest.mark.parametrize(("policy", "failed"), [("fail", True), ("warn", False), ("pass", False)])
def test_the_policy_decides_what_inconclusive_figures_left_do(store: ResultsStore, policy: str,
                                                             failed: bool) -> None:
    window(store, 4, noise=NoiseModel(0.03, 0.0, 0.003))  # no shared part, few runs: wide intervals
    run = record_run(store, 5, branch="feature", noise=NoiseModel(0.03, 0.0, 0.003))
    result = compare(store, run, "main", parse_tolerances(["energy_mj=12%"]), policy=policy)
    assert result.inconclusive, result.table()
    assert result.failed is failed and f"policy {policy}" in (result.summary() + " ".join(result.notes))


def test_invalid_missing_skipped_and_new_figures(store: ResultsStore) -> None:
    window(store, 4)
    run = record_run(store, 9, branch="feature", variants=VARIANTS[1:])
    store.record(run, "baseline-int_fallback", "latency_ms", None, valid=False, reason="E_TIMEOUT")
    store.record(run, "new-int8", "latency_ms", 3.0)
    v = verdicts(compare(store, run, "main", parse_tolerances(TOLERANCES)))
    assert v[("baseline-int8", "energy_mj")] == "MISSING"
    assert v[("baseline-int_fallback", "latency_ms")] == "INVALID" and v[("new-int8", "latency_ms")] == "new"


def test_remeasured_sessions_of_other_runs_and_other_branches_are_not_baselines(store: ResultsStore) -> None:
    ids = window(store, 5)
    record_run(store, 1, branch="main", remeasure_of=ids[0])
    crash = record_run(store, 4, branch="main")
    store.update_meta(crash, crashes_main={"pruned-int8": "unexpected OverflowError"})
    record_run(store, 2, branch="feature")
    run = record_run(store, 3, branch="feature")
    result = compare(store, run, "main", parse_tolerances(TOLERANCES))
    assert [r.id for r in result.window] == ids
    with pytest.raises(HilError, match=f"baseline run {crash} ended in an unexpected error"):
        compare(store, run, f"{ids[0]}-{ids[2]},{crash}", parse_tolerances(TOLERANCES))


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("too_few", "2 baseline run(s) is too few to estimate the bench's noise"),
        ("one_run", "1 baseline run(s) is too few to estimate the bench's noise"),  # its trials show noise
        ("real_baseline", "is simulated and baseline run"),
        ("other_settings", "was measured with trials 3, run"),
        ("other_bench", "was measured on bench lab-b.yaml, run"),
        ("other_firmware", "ran firmware other-fw, run"),
        ("fine_tolerance", "energy_mj=0.5%: smaller than this bench's noise can resolve"),
        ("no_branch", "no finished run on branch nightly"),
    ],
)
def test_bad_baselines_and_tolerances_are_one_clear_error_and_no_verdict(store: ResultsStore, setup: str,
                                                                        expected: str) -> None:
    tol, ref = TOLERANCES, "main"
    if setup == "too_few":
        window(store, 2)
    elif setup == "one_run":
        window(store, 1)
    elif setup == "real_baseline":
        window(store, 4, simulated=False)
    elif setup == "other_settings":
        window(store, 4, trials=3)
    elif setup in ("other_bench", "other_firmware"):
        for run_id in window(store, 4):
            if setup == "other_bench":
                store._conn.execute("UPDATE runs SET bench = 'lab-b.yaml' WHERE id = ?", (run_id,))
            else:
                store.update_meta(run_id, firmware="other-fw 1.0")
    else:
        window(store, 10)
    if setup == "fine_tolerance":
        tol = ["energy_mj=0.5%"]
    if setup == "no_branch":
        ref = "nightly"
    run = record_run(store, 1, branch="feature")
    store.update_meta(run, firmware="tinyml-hil-bench 0.2.0")
    with pytest.raises(HilError) as exc:
        compare(store, run, ref, parse_tolerances(tol))
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_hil_gate_writes_no_verdict_when_it_refuses(store: ResultsStore, tmp_path: Path, capsys) -> None:
    from hil.cli import main

    window(store, 2)
    record_run(store, 1, branch="feature")
    out = tmp_path / "gate.json"
    md = tmp_path / "gate.md"
    code = main(["gate", "--db", str(store.path), "--baseline", "main", "--json", str(out), "--markdown", str(md)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hil: error: ") and err.count("\n") == 1
    assert not out.exists() and not md.exists()


def test_hil_noise_estimates_the_benchs_noise_from_its_history(store: ResultsStore, capsys) -> None:
    """Twenty sessions drawn with 2 % between sessions (75 % shared) and 0.3 % per trial: the estimate finds them."""
    from hil.cli import main
    from hil.gate.noise import estimate

    window(store, 20)
    rows = {(r.variant, r.metric): r for r in estimate(store, branch="main", metrics=["energy_mj", "arena_kb"])}
    pooled = rows[("*", "energy_mj")]
    assert pooled.runs == 20 and pooled.between_pct == pytest.approx(2.0, rel=0.3)
    assert pooled.shared_pct == pytest.approx(100 * NOISE.shared_sd, rel=0.4)
    assert pooled.net_pct == pytest.approx(100 * NOISE.variant_sd, rel=0.3)
    assert rows[("qat-int8", "energy_mj")].within_pct == pytest.approx(0.3, rel=0.3)
    assert rows[("*", "arena_kb")].between_pct == 0.0
    one, two, three = pooled.resolvable_pct
    assert one > two > three > 0
    assert main(["noise", "--db", str(store.path), "--metric", "energy_mj"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["metric", "variant", "runs"] and "all (pooled)" in out


def test_a_database_without_trials_counts_each_figure_as_one_value(store: ResultsStore) -> None:
    """Runs of the previous harness kept only medians: the gate still judges them, with one value each."""
    for k in range(6):
        run = store.start_run(bench="bench.yaml", simulated=True, git_commit=f"{k}", git_branch="main")
        for i, v in enumerate(VARIANTS):
            store.record(run, v, "energy_mj", figures(i)["energy_mj"] * NOISE.gain(k, v, 0), trials=5, spread=0.1)
        store.finish_run(run, "passed")
    cand = store.start_run(bench="bench.yaml", simulated=True, git_commit="x", git_branch="feature")
    for i, v in enumerate(VARIANTS):
        store.record(cand, v, "energy_mj", figures(i)["energy_mj"] * NOISE.gain(99, v, 0) * (1.3 if i == 0 else 1))
    result = compare(store, cand, "main", parse_tolerances(["energy_mj=10%"]))
    assert verdicts(result)[(VARIANTS[0], "energy_mj")] == "REGRESSION" and math.isfinite(result.rows[0].high)


@pytest.mark.parametrize(
    ("token", "kind", "amount"),
    [
        ("energy_mj=5%", "rel", 5.0),
        ("latency_ms:2.5%", "rel", 2.5),
        ("accuracy=0.5pp", "pp", 0.5),
        ("arena_kb=2", "abs", 2.0),
        ("arena_kb=2KB", "abs", 2.0),
        ("latency_ms=1.5ms", "abs", 1.5),
    ],
)
def test_tolerance_forms(token: str, kind: str, amount: float) -> None:
    tol = parse_tolerance(token)
    assert (tol.kind, tol.amount) == (kind, amount)


def test_relative_and_absolute_allowances() -> None:
    assert parse_tolerance("energy_mj=5%").allowed(20.0) == pytest.approx(1.0)
    assert parse_tolerance("accuracy=0.5pp").allowed(98.0) == pytest.approx(0.5)
    assert parse_tolerance("arena_kb=2").allowed(1000.0) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["energy_mj"], "bad tolerance 'energy_mj': expected METRIC=N%"),
        (["energy_mj=five"], "bad tolerance 'energy_mj=five': expected"),
        (["energy_mj=-5%"], "bad tolerance 'energy_mj=-5%'"),
        (["energy=5%"], "unknown metric 'energy'; known: latency_ms"),
        (["latency_ms=0.5pp"], "'pp' (percentage points) is for % metrics and latency_ms is in ms"),
        (["latency_ms=5x"], "unknown suffix 'x'"),
        (["latency_ms=5%", "latency_ms=3%"], "latency_ms already has a tolerance (5%)"),
    ],
)
def test_bad_tolerances_name_the_token_and_the_accepted_forms(tokens: list[str], expected: str) -> None:
    with pytest.raises(HilError) as exc:
        parse_tolerances(tokens)
    assert expected in str(exc.value) and "\n" not in str(exc.value)
