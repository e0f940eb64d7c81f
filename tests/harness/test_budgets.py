"""Budget file: merging of defaults and overrides, limit checks, and one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hil.budgets import Limit, load_budgets
from hil.errors import HilError
from hil.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def error_of(tmp_path: Path, doc: object) -> str:
    path = write(tmp_path, doc)
    with pytest.raises(HilError) as exc:
        load_budgets(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


GOOD = {
    "version": 1,
    "defaults": {"latency_ms": {"max": 100}, "accuracy": {"min": 90}, "arena_kb": {"max": 64}},
    "variants": {
        "baseline-no_opt": {"latency_ms": {"max": 150}, "arena_kb": None},
        "pruned-int8": {"energy_mj": {"min": 1, "max": 3}},
    },
}


def test_overrides_merge_over_defaults_metric_by_metric(tmp_path: Path) -> None:
    budgets = load_budgets(write(tmp_path, GOOD))
    base = budgets.for_variant("baseline-no_opt")
    assert set(base) == {"latency_ms", "accuracy"}  # arena_kb removed by null
    assert (base["latency_ms"].min, base["latency_ms"].max) == (None, 150.0)
    pruned = budgets.for_variant("pruned-int8")
    assert set(pruned) == {"latency_ms", "accuracy", "arena_kb", "energy_mj"}
    assert (pruned["energy_mj"].min, pruned["energy_mj"].max) == (1.0, 3.0)
    other = budgets.for_variant("qat-int8")
    assert (other["latency_ms"].max, other["accuracy"].min) == (100.0, 90.0)
    assert other["accuracy"].variant == "qat-int8" and other["accuracy"].metric == "accuracy"


def test_cases_follow_the_metric_catalogue_order(tmp_path: Path) -> None:
    cases = load_budgets(write(tmp_path, GOOD)).cases(["pruned-int8", "baseline-no_opt"])
    order = list(METRICS)
    assert [v for v, _, _ in cases] == ["pruned-int8"] * 4 + ["baseline-no_opt"] * 2
    metrics = [m for v, m, _ in cases if v == "pruned-int8"]
    assert metrics == sorted(metrics, key=order.index)


def test_limit_messages_name_variant_metric_value_and_budget() -> None:
    energy = Limit(max=3.0, metric="energy_mj", variant="pruned-int8")
    assert energy.check(3.412) == (False, "pruned-int8 energy_mj = 3.412 mJ exceeds budget max 3.000 mJ")
    ok, message = energy.check(2.5)
    assert ok and "2.500 mJ" in message
    assert energy.check(3.0)[0]  # the limit itself is within budget
    accuracy = Limit(min=90.0, metric="accuracy", variant="qat-int8")
    assert accuracy.check(88.1) == (False, "qat-int8 accuracy = 88.100 % is below budget min 90.000 %")
    for missing in (None, float("nan")):
        ok, message = accuracy.check(missing)
        assert not ok and "qat-int8 accuracy has no valid measurement" in message


def test_unknown_variant_is_an_error_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    budgets = load_budgets(write(tmp_path, GOOD))
    budgets.check_variants(["baseline-no_opt", "pruned-int8", "qat-int8"])
    with pytest.raises(HilError) as exc:
        budgets.check_variants(["baseline-no_opt", "qat-int8"])
    path = tmp_path / "budgets.yaml"
    assert str(exc.value) == f"{path}: variants.pruned-int8: unknown variant; known: baseline-no_opt, qat-int8"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"variants": {"pruned-int8": {"energy_mJ": {"max": 3}}}},
            "variants.pruned-int8.energy_mJ: unknown metric",
        ),
        ({"defaults": {"pulse_width_ms": {"max": 3}}}, "defaults.pulse_width_ms: metric is reported only"),
        (
            {"defaults": {"latency_ms": {"max": 10, "min": 20}}},
            "defaults.latency_ms: min 20.0 is greater than max",
        ),
        (
            {"defaults": {"latency_ms": {"maximum": 10}}},
            "defaults.latency_ms.maximum: unknown key; allowed keys: min, max",
        ),
        (
            {"defaults": {"latency_ms": {"max": "fast"}}},
            "defaults.latency_ms.max: a limit must be a number (got 'fast')",
        ),
        ({"defaults": {"latency_ms": {}}}, "defaults.latency_ms: a limit needs min, max or both"),
        ({"defaults": {"latency_ms": 100}}, "defaults.latency_ms: expected a mapping such as {max: 100}"),
        ({"limits": {}}, "limits: unknown key; allowed keys: version, defaults, variants"),
        ({"version": 2}, "version: unsupported version 2; allowed: 1"),
        ("[1, 2]", "the budget file must be a YAML mapping"),
        ("defaults: {latency_ms: {max: 1}", "not valid YAML"),
    ],
)
def test_validation_errors_name_file_key_and_allowed_values(tmp_path: Path, doc: object, expected: str) -> None:
    assert expected in error_of(tmp_path, doc)


def test_unknown_metric_error_lists_the_metrics_with_budgets(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"defaults": {"energy_mJ": {"max": 3}}})
    known = message.split("known: ")[1].split(", ")
    assert known == [m.name for m in METRICS.values() if m.budget]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(HilError, match="budget file not found"):
        load_budgets(tmp_path / "nope.yaml")


def test_shipped_budgets_cover_the_default_matrix() -> None:
    """The root budgets.yaml is valid, names only variants of models/variants.yaml, and budgets every one."""
    matrix = yaml.safe_load((REPO / "models" / "variants.yaml").read_text())
    variants = [f"{recipe}-{mode}" for recipe, modes in matrix["variants"].items() for mode in modes]
    budgets = load_budgets(REPO / "budgets.yaml")
    budgets.check_variants(variants)
    for v in variants:
        assert {"latency_ms", "energy_mj", "accuracy", "flash_kb", "arena_kb"} <= set(budgets.for_variant(v))


def test_documented_budget_example_and_metric_table_match_the_code(tmp_path: Path) -> None:
    """docs/results-and-gate.md: its budgets example is valid and its metric table is METRICS."""
    doc = (REPO / "docs" / "results-and-gate.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    budgets = load_budgets(write(tmp_path, example))
    assert "arena_kb" not in budgets.for_variant("distilled-int8")
    assert budgets.for_variant("baseline-no_opt")["latency_ms"].max == 28
    table = doc.split("| metric | unit | better | budget |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name, unit, better, budget in (cells[:4], cells[4:]):
            if name:  # a row may hold one metric
                rows[name.strip("`")] = (unit, better, budget == "yes")
    assert rows == {m.name: (m.unit, m.better, m.budget) for m in METRICS.values()}
