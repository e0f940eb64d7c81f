"""variants.yaml validation: the shipped matrix, name selection, and errors that name the key."""

from pathlib import Path

import pytest
import yaml

from models.errors import ModelError
from models.registry import DEFAULT_CONFIG, load_registry


def test_default_matrix_has_at_least_twelve_variants_and_the_reference_names() -> None:
    r = load_registry(DEFAULT_CONFIG)
    names = [v.name for v in r.variants()]
    assert len(names) >= 12
    assert r.reference.name == "baseline-no_opt"
    study = {
        "cnn_not_optimised-no_opt": "baseline-no_opt",
        "cnn_not_optimised-default_opt": "baseline-dynamic",
        "cnn_not_optimised-int8_quant": "baseline-int8",
        "cnn_pruned-no_opt": "pruned-no_opt",
        "cnn_pruned-default_opt": "pruned-dynamic",
        "cnn_pruned-int8_quant": "pruned-int8",
    }
    assert [v.name for v in r.select(list(study))] == list(study.values())


def test_select_by_recipe_and_alias() -> None:
    r = load_registry(DEFAULT_CONFIG)
    assert [v.name for v in r.select(["qat"])] == ["qat-int_fallback", "qat-int8"]
    assert [v.name for v in r.select(["cnn_pruned-int8_quant", "pruned-int8"])] == ["pruned-int8"]


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "v.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"recipes": {"b": {"kind": "baseline"}}, "variants": {"b": ["int4"]}},
            r"variants\.b\.0: Input should be",
        ),
        ({"recipes": {"b": {"kind": "baselin"}}, "variants": {}}, r"recipes\.b: Input tag 'baselin'"),
        (
            {
                "recipes": {"b": {"kind": "baseline"}, "p": {"kind": "pruned", "target_sparsity": 1.5}},
                "variants": {},
            },
            r"recipes\.p\.pruned\.target_sparsity: Input should be less than 1",
        ),
        ({"recipes": {"b": {"kind": "baseline"}}, "variants": {"x": ["int8"]}}, "unknown recipe 'x'"),
        (
            {"recipes": {"b": {"kind": "baseline", "epochs": 3}}, "variants": {}},
            r"recipes\.b\.baseline\.epochs",
        ),
        (
            {"recipes": {"p": {"kind": "pruned"}}, "variants": {}},
            "exactly one recipe must have kind 'baseline'",
        ),
        (
            {
                "recipes": {"b": {"kind": "baseline"}},
                "variants": {"b": ["int8"]},
                "aliases": {"old": "b-no_opt"},
            },
            "aliases: 'old' points to 'b-no_opt'",
        ),
        (  # a recipe name becomes a file name: no path may escape --out
            {"recipes": {"b": {"kind": "baseline"}, "../../evil": {"kind": "qat"}},
             "variants": {"../../evil": ["no_opt"]}},
            r"recipes: '\.\./\.\./evil' is not a valid recipe name",
        ),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, cfg: dict, message: str) -> None:
    path = _write(tmp_path, cfg)
    with pytest.raises(ModelError, match=message) as info:
        load_registry(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="variant config not found"):
        load_registry(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes: [unclosed")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_registry(bad)
