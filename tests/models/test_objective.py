"""The reference study's objective (reproduced from its published table), the corrected one, and ranking."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from models.errors import ModelError
from models.objective import ObjectiveWeights, corrected_objective, rank, reference_objective

# The study's table: (size KB, time ms, accuracy %) and its published L, the first row the unoptimized model.
PUBLISHED = [
    ((3200, 23, 99.18), 0.00),
    ((834, 47, 90.26), 0.21),
    ((999, 483, 99.18), 19.31),
    ((1000, 486, 99.08), 19.44),
    ((1612, 23, 99.18), -0.50),
]
BASE = {"size0": 3200, "time0": 23, "accuracy0": 99.18}


@pytest.mark.parametrize(("row", "published"), PUBLISHED)
def test_reference_objective_reproduces_the_published_values(
    row: tuple[float, ...], published: float
) -> None:
    assert round(reference_objective(*row, **BASE), 2) == published


def test_reference_objective_rewards_accuracy_loss() -> None:
    same = reference_objective(1600, 23, 99.18, **BASE)
    worse = reference_objective(1600, 23, 50.0, **BASE)
    assert worse < same  # losing half the accuracy makes the variant look BETTER to the published objective
    assert corrected_objective(1600, 23, 50.0, **BASE) > corrected_objective(1600, 23, 99.18, **BASE)


def test_corrected_objective_terms_and_weights() -> None:
    base = {"size0": 100, "time0": 10, "accuracy0": 100}
    # size halves (-0.5), time doubles (+1), accuracy drops 10 points of 100 (+0.1)
    assert corrected_objective(50, 20, 90, **base) == pytest.approx(-0.5 + 1 + 0.1)
    weights = ObjectiveWeights(size=2, time=0.5, accuracy=3)
    assert corrected_objective(50, 20, 90, **base, weights=weights) == pytest.approx(-1.0 + 0.5 + 0.3)
    # an accuracy GAIN lowers the corrected objective
    assert corrected_objective(100, 10, 110, **base) == pytest.approx(-0.1)
    assert corrected_objective(100, 10, 100, **base) == 0.0


def test_energy_term_counts_only_when_energies_are_given() -> None:
    base = {"size0": 100, "time0": 10, "accuracy0": 100}
    without = corrected_objective(50, 20, 90, **base)
    with_energy = corrected_objective(50, 20, 90, 5.0, **base, energy0=4.0)
    assert with_energy - without == pytest.approx(0.25)
    weighted = corrected_objective(50, 20, 90, 5.0, **base, energy0=4.0, weights=ObjectiveWeights(energy=2))
    assert weighted - without == pytest.approx(0.5)
    # an energy weight changes nothing when no energy is given
    assert corrected_objective(50, 20, 90, **base, weights=ObjectiveWeights(energy=7)) == without


@pytest.mark.parametrize(("energy", "energy0"), [(5.0, None), (None, 4.0)])
def test_energy_without_its_counterpart_raises(energy: float | None, energy0: float | None) -> None:
    with pytest.raises(ModelError, match="counterpart"):
        corrected_objective(50, 20, 90, energy, size0=100, time0=10, accuracy0=100, energy0=energy0)


@pytest.mark.parametrize("field", ["size0", "time0", "accuracy0"])
@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "big"])
def test_bad_reference_values_raise(field: str, value: object) -> None:
    base = {"size0": 100, "time0": 10, "accuracy0": 100, field: value}
    for objective in (reference_objective, corrected_objective):
        with pytest.raises(ModelError, match=field) as exc:
            objective(50, 20, 90, **base)
        assert "\n" not in str(exc.value)


def test_zero_reference_energy_and_negative_measurements_raise() -> None:
    base = {"size0": 100, "time0": 10, "accuracy0": 100}
    with pytest.raises(ModelError, match="energy0"):
        corrected_objective(50, 20, 90, 1.0, **base, energy0=0.0)
    with pytest.raises(ModelError, match="size"):
        corrected_objective(-5, 20, 90, **base)
    with pytest.raises(ModelError, match="time"):
        reference_objective(50, math.nan, 90, **base)


@pytest.mark.parametrize("kwargs", [{"size": -1}, {"accuracy": math.nan}, {"energy": "x"}, {"time": True}])
def test_bad_weights_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModelError, match=next(iter(kwargs))):
        ObjectiveWeights(**kwargs)  # type: ignore[arg-type]


def published_rows() -> list[dict[str, object]]:
    names = ["baseline", "int8", "pruned", "clustered", "distilled"]
    return [
        {"variant": name, "size_bytes": row[0] * 1000, "latency_ms": row[1], "accuracy": row[2]}
        for name, (row, _) in zip(names, PUBLISHED, strict=True)
    ]


def test_rank_adds_both_objectives_and_sorts_by_the_corrected_one() -> None:
    ranked = rank(published_rows(), "baseline")
    assert list(ranked["variant"]) == ["distilled", "baseline", "int8", "pruned", "clustered"]
    published = {
        name: value
        for name, (_, value) in zip(
            ["baseline", "int8", "pruned", "clustered", "distilled"], PUBLISHED, strict=True
        )
    }
    for row in ranked.to_dict("records"):
        assert round(row["objective_reference"], 2) == published[row["variant"]]
    int8 = ranked.set_index("variant").loc["int8"]
    # corrected: the 8.99 % relative accuracy loss is added instead of subtracted
    assert int8["objective"] - int8["objective_reference"] == pytest.approx(2 * (99.18 - 90.26) / 99.18)
    assert ranked["objective"].is_monotonic_increasing


def test_rank_prefers_accurate_variant_that_the_reference_objective_would_not() -> None:
    rows = [
        {"variant": "base", "size_bytes": 3200, "latency_ms": 23, "accuracy": 99.18},
        {"variant": "broken", "size_bytes": 1600, "latency_ms": 23, "accuracy": 50.0},
        {"variant": "good", "size_bytes": 1612, "latency_ms": 23, "accuracy": 99.18},
    ]
    ranked = rank(rows, "base")
    assert ranked["variant"].iloc[0] == "good"
    by_reference = ranked.sort_values("objective_reference")
    assert by_reference["variant"].iloc[0] == "broken"


def test_rank_keeps_input_order_on_ties_and_leaves_input_untouched() -> None:
    # enough rows that an unstable sort (introsort leaves insertion sort past 16 items) would shuffle ties
    n = 200
    rows = pd.DataFrame(
        {
            "variant": ["ref"] + [f"v{i:03d}" for i in range(n)],
            "size_bytes": [100] + [50 if i % 3 else 80 for i in range(n)],
            "latency_ms": [10] * (n + 1),
            "accuracy": [0.9] * (n + 1),
            "extra": ["x"] + [str(i) for i in range(n)],
        }
    )
    snapshot = rows.copy()
    ranked = rank(rows, "ref")
    small = [f"v{i:03d}" for i in range(n) if i % 3]
    larger = [f"v{i:03d}" for i in range(n) if not i % 3]
    assert list(ranked["variant"]) == [*small, *larger, "ref"]
    assert list(ranked["extra"]) == [v[1:].lstrip("0") or "0" for v in [*small, *larger]] + ["x"]
    pd.testing.assert_frame_equal(rows, snapshot)


def test_rank_with_energy_and_weights() -> None:
    rows = [
        {"variant": "ref", "size_bytes": 100, "latency_ms": 10, "accuracy": 0.9, "energy_mj": 2.0},
        {"variant": "fast", "size_bytes": 100, "latency_ms": 5, "accuracy": 0.9, "energy_mj": 4.0},
        {"variant": "frugal", "size_bytes": 100, "latency_ms": 10, "accuracy": 0.9, "energy_mj": 1.0},
    ]
    # equal weights: fast = -0.5 + 1.0 = 0.5, frugal = -0.5
    ranked = rank(rows, "ref").set_index("variant")
    assert ranked.loc["fast", "objective"] == pytest.approx(0.5)
    assert ranked.loc["frugal", "objective"] == pytest.approx(-0.5)
    # energy barely counts, time a lot: fast wins
    ranked = rank(rows, "ref", weights=ObjectiveWeights(time=10, energy=0.1))
    assert ranked["variant"].iloc[0] == "fast"
    assert ranked["objective"].iloc[0] == pytest.approx(-5 + 0.1)
    # the reference objective has no energy term
    assert rank(rows, "ref").set_index("variant").loc["frugal", "objective_reference"] == 0.0


def test_rank_errors() -> None:
    rows = published_rows()
    with pytest.raises(ModelError, match="reference variant 'nope'"):
        rank(rows, "nope")
    with pytest.raises(ModelError, match="latency_ms"):
        rank([{k: v for k, v in r.items() if k != "latency_ms"} for r in rows], "baseline")
    with pytest.raises(ModelError, match="more than once"):
        rank([*rows, rows[1]], "baseline")
    zero_ref = [dict(r) for r in rows]
    zero_ref[0]["accuracy"] = 0
    with pytest.raises(ModelError, match="accuracy0"):
        rank(zero_ref, "baseline")
    partial = [dict(r, energy_mj=1.0) for r in rows]
    del partial[2]["energy_mj"]
    with pytest.raises(ModelError, match="energy_mj missing for \\['pruned'\\]"):
        rank(partial, "baseline")
    negative = [dict(r) for r in rows]
    negative[3]["size_bytes"] = -1
    with pytest.raises(ModelError, match="variant 'clustered'"):
        rank(negative, "baseline")
