"""`hil models ...` as a user runs it: exit codes, one-line errors, no tracebacks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

# TFLM refuses hybrid models in conv kernels by name, in fully connected ones by the dtype pair.
HYBRID = "Hybrid models are not supported|FLOAT32 with filter type: INT8 not supported"
REPO = Path(__file__).resolve().parents[2]


def hil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_unknown_variant_is_one_line_exit_2() -> None:
    r = hil("models", "build", "--only", "nope", "--out", "/nonexistent/never-created")
    assert r.returncode == 2
    assert r.stderr.startswith("hil: error: unknown variant 'nope'")
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        "recipes: {b: {kind: baseline}, c: {kind: clustered, clusters: 1}}\nvariants: {b: [int8]}\n"
    )
    r = hil("models", "build", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "recipes.c.clustered.clusters" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_spec(tmp_path: Path) -> None:
    r = hil("models", "build", "--data", "cifar:/x", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "unknown data set spec 'cifar:/x'" in r.stderr


def test_inspect_rejects_a_non_tflite_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 100)
    r = hil("models", "inspect", str(junk))
    assert r.returncode == 2 and "junk.tflite: not a TFLite flatbuffer" in r.stderr


@pytest.mark.slow
def test_inspect_reports_ops_arena_and_quantization(tiny_variants) -> None:
    r = hil("models", "inspect", str(tiny_variants["baseline-int8"]))
    assert r.returncode == 0, r.stderr
    assert "CONV_2D" in r.stdout and "minimum arena" in r.stdout
    assert "input      int8     [1, 32, 32, 1]     0.00392157  zp -128" in r.stdout
    r = hil("models", "inspect", str(tiny_variants["baseline-dynamic"]))
    assert r.returncode == 0 and "NOT deployable: " in r.stdout
    assert re.search(HYBRID, r.stdout)


def test_list_shows_variants_and_aliases() -> None:
    r = hil("models", "list")
    assert r.returncode == 0
    assert "clustered-int8_lut" in r.stdout and "cnn_pruned-int8_quant" in r.stdout


SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHARED_MODELS = sorted(SHARED_DATA.glob("*.tflite")) if SHARED_DATA.is_dir() else []


@pytest.mark.skipif(not SHARED_MODELS, reason=f"{SHARED_DATA} (real TFLM and MLPerf Tiny models) is absent")
@pytest.mark.parametrize("model", SHARED_MODELS, ids=lambda p: p.name)
def test_inspect_real_models_never_dies_on_a_signal(model: Path) -> None:
    """TFLM crashes at some too-small arenas (SVDF, LSTM): the arena search runs those probes in a child."""
    r = subprocess.run([sys.executable, "-m", "hil.cli", "models", "inspect", str(model)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode in (0, 2), (r.returncode, r.stderr[-500:])
    if r.returncode == 0:
        arena = re.search(r"minimum arena ([\d,]+) bytes \(allocator report ([\d,]+) bytes\)", r.stdout)
        assert arena, r.stdout
        minimum, reported = (int(x.replace(",", "")) for x in arena.groups())
        assert 0.5 * reported <= minimum <= 2 * reported
    else:
        assert r.stderr.startswith("hil: error: ") and r.stderr.count("\n") == 1
