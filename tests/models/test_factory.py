"""The factory end to end on a tiny real matrix: metrics, artifacts, caching and failure behaviour."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.artifacts import METRICS_CSV, load_artifacts
from models.datasets import load
from models.errors import ModelError
from models.factory import METRICS_COLUMNS, build, load_metrics
from tests.conftest import TINY_LIMITS
from tests.models.test_cli_models import HYBRID

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_metrics_table_has_every_column_and_variant(tiny_build) -> None:
    out, table = tiny_build
    assert set(METRICS_COLUMNS) <= set(table.columns)
    assert {f"auc_{c}" for c in "0123456789"} <= set(table.columns)
    assert len(table) == 10
    on_disk = pd.read_csv(out / METRICS_CSV)  # the CSV users open in a spreadsheet, beside metrics.json
    assert list(on_disk["variant"]) == list(table["variant"])
    assert load_metrics(out)["size_bytes"].tolist() == table["size_bytes"].tolist()
    assert list(load_artifacts(out).variants) == list(table["variant"])


def test_artifacts_per_variant(tiny_build) -> None:
    out, table = tiny_build
    arts = load_artifacts(out)
    for name in table["variant"]:
        art = arts[name]
        data = art.model_bytes()  # also checks the sha256 the factory recorded
        assert data[4:8] == b"TFL3" and len(data) == art.size_bytes and art.tflite.parent == out
        c_name = "model_" + name.replace("-", "_")
        assert f"{len(data)};" in (out / f"{c_name}.cc").read_text()
        assert f"extern const unsigned char {c_name}[]" in (out / f"{c_name}.h").read_text()
    outputs = arts["baseline-int8"].host_outputs()
    assert outputs.shape == (TINY_LIMITS["limit_test"], 10)
    assert float(np.mean(outputs.argmax(1) == load("digits", **TINY_LIMITS).y_test)) == pytest.approx(
        table.set_index("variant").loc["baseline-int8", "accuracy_tflm"]
    )
    assert arts["baseline-dynamic"].host_outputs() is None  # not deployable: no TFLM outputs
    assert arts["baseline-int8"].roc_plot.read_bytes()[:4] == b"\x89PNG"
    assert arts["pruned-int8"].weights_plot.read_bytes()[:4] == b"\x89PNG"
    assert arts["clustered-int8"].weights_plot is not None


def test_deployability_is_reported_not_hidden(tiny_build) -> None:
    _, table = tiny_build
    t = table.set_index("variant")
    assert not t.loc["baseline-dynamic", "tflm_ok"]
    assert re.search(HYBRID, t.loc["baseline-dynamic", "tflm_error"])
    assert (
        not t.loc["baseline-float16", "tflm_ok"] and "DEQUANTIZE" in t.loc["baseline-float16", "tflm_error"]
    )
    deployable = t[t["tflm_ok"].astype(bool)]
    assert len(deployable) == 8
    assert deployable["arena_bytes"].gt(0).all()
    assert deployable["arena_agree"].astype(bool).all()
    # TFLM accuracy equals TFLite accuracy within one point for every deployable variant
    assert (deployable["accuracy_tflm"] - deployable["accuracy"]).abs().max() <= 0.01


def test_size_sparsity_and_agreement_relations(tiny_build) -> None:
    _, table = tiny_build
    t = table.set_index("variant")
    float_size = t.loc["baseline-no_opt", "size_bytes"]
    assert t.loc["baseline-no_opt", "compression_ratio"] == 1.0
    assert t.loc["baseline-int8", "compression_ratio"] == pytest.approx(
        float_size / t.loc["baseline-int8", "size_bytes"]
    )
    assert t.loc["baseline-int8", "size_bytes"] < 0.7 * float_size
    assert t.loc["pruned-int8", "sparsity"] > 0.4 > t.loc["baseline-int8", "sparsity"]
    assert t.loc["baseline-no_opt", "agreement_vs_float"] == 1.0
    assert t.loc["baseline-no_opt", "cosine_vs_float"] == pytest.approx(1.0)
    assert 0.5 < t.loc["baseline-int8", "agreement_vs_float"] <= 1.0
    assert t.loc["baseline-int8", "input_dtype"] == "int8"
    assert t.loc["baseline-int_fallback", "input_dtype"] == "float32"


def test_lut_variant_runs_bit_exact_and_is_compressed(tiny_build) -> None:
    out, table = tiny_build
    t = table.set_index("variant")
    assert t.loc["clustered-int8_lut", "tflm_ok"]
    assert bool(t.loc["clustered-int8_lut", "lut_bit_exact"])
    assert "TFLM_DECODE" in t.loc["clustered-int8_lut", "ops"]
    assert t.loc["clustered-int8_lut", "accuracy_tflm"] == t.loc["clustered-int8", "accuracy_tflm"]


def test_second_build_is_cached_and_never_imports_tensorflow(
    tiny_config: Path, tiny_build, tmp_path: Path
) -> None:
    out, table = tiny_build
    cache = out.parent / "cache"
    script = (
        "import sys, json\n"
        "from models.factory import build\n"
        f"t = build({str(tiny_config)!r}, {str(tmp_path / 'again')!r}, cache_dir={str(cache)!r}, "
        f"progress=lambda line: print(line), **{TINY_LIMITS!r})\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'timings': t.attrs['timings']}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tf"] is False
    assert result["timings"]["train_s"] == 0 and result["timings"]["convert_s"] == 0
    assert len(re.findall(r"^\[\s*\d+/10\] \S+\s+cached ", proc.stdout, flags=re.M)) == 10
    again = load_artifacts(tmp_path / "again").table()
    assert again["size_bytes"].tolist() == table["size_bytes"].tolist()


def test_unknown_variant_fails_before_touching_the_output(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    with pytest.raises(ModelError, match="unknown variant 'nope'"):
        build(tiny_config, out, only=["nope"], progress=lambda _: None)
    assert not out.exists()


def test_interrupted_build_leaves_previous_artifacts_intact(
    tiny_config: Path, tiny_build, tmp_path: Path
) -> None:
    out, _ = tiny_build
    cache = out.parent / "cache"
    target = tmp_path / "models"
    build(
        tiny_config, target, only=["baseline-int8"], cache_dir=cache, progress=lambda _: None, **TINY_LIMITS
    )
    before = sorted(p.name for p in target.iterdir())

    def interrupt(line: str) -> None:
        if line.startswith("[ 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(tiny_config, target, only=["baseline"], cache_dir=cache, progress=interrupt, **TINY_LIMITS)
    assert sorted(p.name for p in target.iterdir()) == before
    assert not any(p.name.startswith("models.tmp") for p in tmp_path.iterdir())


def test_refuses_to_replace_a_folder_that_is_not_ours(tiny_config: Path, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a model artifact folder"):
        build(tiny_config, tmp_path, progress=lambda _: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cache_key_changes_with_the_recipe(tiny_config: Path, tmp_path: Path) -> None:
    import yaml

    from models.datasets import load
    from models.factory import Factory
    from models.registry import load_registry

    ds = load("digits", **TINY_LIMITS)
    a = Factory(load_registry(tiny_config), ds, tmp_path)
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["recipes"]["pruned"]["target_sparsity"] = 0.7
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    b = Factory(load_registry(changed), ds, tmp_path)
    assert a.recipe_key("pruned") != b.recipe_key("pruned")
    assert a.recipe_key("baseline") == b.recipe_key("baseline")
    assert a.recipe_key("qat") == b.recipe_key("qat")
