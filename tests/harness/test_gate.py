"""Merge gate on real results databases: tolerances, verdicts, and the failures that name variant and metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.errors import HilError
from hil.gate import compare, parse_tolerance, parse_tolerances
from hil.results import ResultsStore

# A small but realistic run: figures of the default matrix on the virtual bench.
FIGURES = {
    "baseline-int8": {"latency_ms": 16.37, "energy_mj": 22.59, "power_mw": 1119.5, "accuracy": 99.24, "arena_kb": 25.4},
    "pruned-int8": {"latency_ms": 16.37, "energy_mj": 22.59, "power_mw": 1119.4, "accuracy": 98.49, "arena_kb": 25.4},
    "distilled-int8": {"latency_ms": 4.447, "energy_mj": 6.138, "power_mw": 1073.6, "accuracy": 99.5, "arena_kb": 14.2},
}
TOLERANCES = ["energy_mj=5%", "latency_ms=5%", "accuracy=0.5pp", "arena_kb=2"]


def record_run(
    store: ResultsStore, figures: dict[str, dict[str, float]], *, branch: str = "main", simulated: bool = True
) -> int:
    run = store.start_run(bench="bench.yaml", simulated=simulated, git_commit="c0ffee", git_branch=branch)
    for variant, metrics in figures.items():
        for name, value in metrics.items():
            store.record(run, variant, name, value, trials=5, spread=abs(value) * 0.001)
    store.finish_run(run, "passed")
    return run


def changed(variant: str, metric: str, factor: float = 1.0, delta: float = 0.0) -> dict[str, dict[str, float]]:
    out = {v: dict(m) for v, m in FIGURES.items()}
    out[variant][metric] = out[variant][metric] * factor + delta
    return out


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def verdicts(result) -> dict[tuple[str, str], str]:
    return {(r.variant, r.metric): r.verdict for r in result.rows}


def test_identical_runs_pass_with_every_row_ok(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    run = record_run(store, FIGURES)
    result = compare(store, run, base, parse_tolerances(TOLERANCES))
    assert not result.failed
    assert len(result.rows) == 15 and set(verdicts(result).values()) == {"ok"}
    assert result.summary().startswith("gate passed")


def test_ten_percent_slower_variant_fails_naming_variant_and_metric(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    run = record_run(store, changed("pruned-int8", "latency_ms", 1.10))
    result = compare(store, run, base, parse_tolerances(TOLERANCES))
    assert result.failed
    (failure,) = result.failures
    assert (failure.variant, failure.metric, failure.verdict) == ("pruned-int8", "latency_ms", "REGRESSION")
    assert failure.change_pct == pytest.approx(10.0)
    assert "pruned-int8 latency_ms" in failure.reason and "5%" in failure.reason
    table = result.table()
    line = next(x for x in table.splitlines() if x.startswith("pruned-int8") and "latency_ms" in x)
    assert "REGRESSION" in line and "+10 %" in line
    assert "gate FAILED: 1 REGRESSION of 15 figures" in table


def test_within_tolerance_is_ok_and_better_is_improved(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    slower = changed("pruned-int8", "latency_ms", 1.04)
    slower["baseline-int8"]["energy_mj"] *= 0.90
    run = record_run(store, slower)
    v = verdicts(compare(store, run, base, parse_tolerances(TOLERANCES)))
    assert v["pruned-int8", "latency_ms"] == "ok"
    assert v["baseline-int8", "energy_mj"] == "improved"


def test_accuracy_is_higher_better_with_percentage_points(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    tol = parse_tolerances(TOLERANCES)
    small_drop = record_run(store, changed("pruned-int8", "accuracy", delta=-0.4))
    assert verdicts(compare(store, small_drop, base, tol))["pruned-int8", "accuracy"] == "ok"
    big_drop = record_run(store, changed("pruned-int8", "accuracy", delta=-0.6))
    result = compare(store, big_drop, base, tol)
    assert verdicts(result)["pruned-int8", "accuracy"] == "REGRESSION" and result.failed
    # 0.6 pp of 98.49 % is 0.61 % relative: a relative 1 % tolerance lets it through
    assert not compare(store, big_drop, base, parse_tolerances(["accuracy=1%"])).failed
    gain = record_run(store, changed("pruned-int8", "accuracy", delta=+0.6))
    assert verdicts(compare(store, gain, base, tol))["pruned-int8", "accuracy"] == "improved"


def test_absolute_tolerance_in_the_metric_unit(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    tol = parse_tolerances(["arena_kb=2"])
    assert not compare(store, record_run(store, changed("distilled-int8", "arena_kb", delta=1.9)), base, tol).failed
    assert compare(store, record_run(store, changed("distilled-int8", "arena_kb", delta=2.1)), base, tol).failed


def test_metrics_without_tolerance_are_shown_but_do_not_fail(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    run = record_run(store, changed("baseline-int8", "power_mw", 1.5))
    result = compare(store, run, base, parse_tolerances(["energy_mj=5%"]))
    assert not result.failed
    row = next(r for r in result.rows if (r.variant, r.metric) == ("baseline-int8", "power_mw"))
    assert row.verdict == "worse" and row.tolerance is None and row.change_pct == pytest.approx(50.0)


def test_invalid_measurements_fail_with_their_reason(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    run = record_run(store, FIGURES)
    store.record(run, "pruned-int8", "energy_mj", None, valid=False, reason="scope capture invalid: no trigger")
    result = compare(store, run, base, parse_tolerances([]))  # even with no tolerance at all
    assert result.failed
    (failure,) = result.failures
    assert failure.verdict == "INVALID" and failure.reason == "run: scope capture invalid: no trigger"
    assert "scope capture invalid: no trigger" in result.table()
    # an invalid baseline figure fails too, naming the side
    again = record_run(store, FIGURES)
    (failure,) = compare(store, again, run, parse_tolerances([])).failures
    assert failure.reason == "baseline: scope capture invalid: no trigger"


def test_missing_measurements_fail_and_new_ones_do_not(store: ResultsStore) -> None:
    base = record_run(store, FIGURES)
    fewer = {v: m for v, m in FIGURES.items() if v != "distilled-int8"}
    result = compare(store, record_run(store, fewer), base, parse_tolerances(TOLERANCES))
    assert result.failed
    assert {(r.variant, r.verdict) for r in result.failures} == {("distilled-int8", "MISSING")}
    assert len(result.failures) == 5
    more = {**FIGURES, "qat-int8": FIGURES["pruned-int8"]}
    result = compare(store, record_run(store, more), base, parse_tolerances(TOLERANCES))
    assert not result.failed
    assert {r.verdict for r in result.rows if r.variant == "qat-int8"} == {"new"}


def test_variants_skipped_by_design_on_both_sides_do_not_fail(store: ResultsStore) -> None:
    def run_with_skip(figures: dict[str, dict[str, float]]) -> int:
        run = record_run(store, figures)
        store.record(run, "baseline-float16", "latency_ms", None, skipped=True, reason="TFLM cannot run it")
        return run

    base = run_with_skip(FIGURES)
    result = compare(store, run_with_skip(FIGURES), base, parse_tolerances(TOLERANCES))
    assert not result.failed and verdicts(result)["baseline-float16", "latency_ms"] == "skipped"
    # a variant that ran in the baseline and is skipped now is a failure
    ran = record_run(store, {**FIGURES, "baseline-float16": {"latency_ms": 31.7}})
    result = compare(store, run_with_skip(FIGURES), ran, parse_tolerances(TOLERANCES))
    assert verdicts(result)["baseline-float16", "latency_ms"] == "INVALID" and result.failed


def test_latest_main_baseline_is_the_previous_finished_main_run(store: ResultsStore) -> None:
    first = record_run(store, FIGURES)
    record_run(store, changed("pruned-int8", "latency_ms", 2.0), branch="feature")  # not a baseline
    run = record_run(store, changed("pruned-int8", "latency_ms", 1.02))  # on main itself
    result = compare(store, "latest", "latest-main", parse_tolerances(TOLERANCES))
    assert (result.run.id, result.baseline.id) == (run, first)
    assert not result.failed
    with pytest.raises(HilError, match="same run"):
        compare(store, run, str(run), parse_tolerances(TOLERANCES))


def test_simulated_runs_are_marked_and_mixing_is_noted(store: ResultsStore) -> None:
    base = record_run(store, FIGURES, simulated=False)
    run = record_run(store, FIGURES)
    result = compare(store, run, base, parse_tolerances(TOLERANCES))
    table = result.table()
    assert table.splitlines()[0].endswith("[simulated]") and not table.splitlines()[1].endswith("[simulated]")
    assert "comparing a simulated run with a real baseline" in table
    d = result.to_dict()
    assert d["failed"] is False and d["run"]["simulated"] is True and len(d["rows"]) == 15
    assert d["tolerances"] == {"energy_mj": "5%", "latency_ms": "5%", "accuracy": "0.5pp", "arena_kb": "2 KB"}


def test_empty_runs_fail_the_gate(store: ResultsStore) -> None:
    base = record_run(store, {})
    result = compare(store, record_run(store, {}), base, parse_tolerances([]))
    assert result.failed and "no measurements" in result.summary()


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
