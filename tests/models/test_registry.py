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
        "cnn_not_optimised-default_opt": "baseline-int_fallback",
        "cnn_not_optimised-int8_quant": "baseline-int8",
        "cnn_pruned-no_opt": "pruned-no_opt",
        "cnn_pruned-default_opt": "pruned-int_fallback",
        "cnn_pruned-int8_quant": "pruned-int8",
    }
    assert [v.name for v in r.select(list(study))] == list(study.values())


# Conversion modes TFLM refuses (README, "Variants"): hybrid dynamic-range models and float16 weights.
NOT_ON_TFLM = {"dynamic", "float16"}


def test_every_study_alias_names_a_variant_tflm_runs() -> None:
    """`make hil` measures all six of the study's variants: none may map to a mode TFLM refuses."""
    r = load_registry(DEFAULT_CONFIG)
    chosen = r.select([name for name in r.config.aliases if name.startswith(("cnn_not_optimised-", "cnn_pruned-"))])
    assert len(chosen) == 6
    assert [v.mode for v in chosen if v.mode in NOT_ON_TFLM] == []
    assert {v.name for v in chosen} <= {v.name for v in r.variants()}


@pytest.mark.slow
def test_the_default_opt_mode_runs_on_tflm_and_dynamic_does_not(tiny_build) -> None:
    """The mode behind `*-default_opt` is deployable on the real TFLM runtime (the tiny matrix, built once per
    session): int_fallback allocates, dynamic-range does not, and int_fallback sits just above int8 in size."""
    _, table = tiny_build
    t = table.set_index("variant")
    mode = load_registry(DEFAULT_CONFIG).config.aliases["cnn_not_optimised-default_opt"].split("-", 1)[1]
    assert bool(t.loc[f"baseline-{mode}", "tflm_ok"]) and not bool(t.loc["baseline-dynamic", "tflm_ok"])
    assert t.loc["baseline-int8", "size_bytes"] < t.loc[f"baseline-{mode}", "size_bytes"]


@pytest.mark.parametrize("alias", ["a/b", "../evil", "=HYPERLINK(\"x\")", ".hidden", "with space", "-opt"])
def test_alias_names_outside_the_safe_set_are_refused(tmp_path: Path, alias: str) -> None:
    cfg = {"recipes": {"b": {"kind": "baseline"}}, "variants": {"b": ["int8"]}, "aliases": {alias: "b-int8"}}
    path = _write(tmp_path, cfg)
    with pytest.raises(ModelError, match=r"aliases: .* is not a valid name \(letters, digits, '-', '_' and '\.'"):
        load_registry(path)


def test_safe_alias_names_are_accepted(tmp_path: Path) -> None:
    cfg = {"recipes": {"b": {"kind": "baseline"}}, "variants": {"b": ["int8"]},
           "aliases": {"cnn_v1.2-int8_quant": "b-int8", "9x": "b-int8"}}
    assert [v.name for v in load_registry(_write(tmp_path, cfg)).select(["cnn_v1.2-int8_quant"])] == ["b-int8"]


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


def test_a_variants_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "variants.yaml"
    bad.write_bytes("# café\n".encode("latin-1") + DEFAULT_CONFIG.read_bytes())
    with pytest.raises(ModelError) as info:
        load_registry(bad)
    assert str(info.value) == f"{bad}: not UTF-8 text (byte 0xe9 on line 1); save the variant config as UTF-8"


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="variant config not found"):
        load_registry(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes: [unclosed")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_registry(bad)
