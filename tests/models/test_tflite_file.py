"""The flatbuffer reader against real converted models and corrupt files."""

from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelError
from models.tflite_file import read_model, read_model_file


@pytest.mark.slow
def test_reads_the_reference_architecture(tiny_variants: dict[str, Path]) -> None:
    m = read_model_file(tiny_variants["baseline-int8"])
    assert m.ops.count("CONV_2D") == 3
    assert m.ops.count("MAX_POOL_2D") == 3
    assert m.ops.count("FULLY_CONNECTED") == 3
    assert m.ops[-1] == "SOFTMAX"
    (inp,) = m.inputs
    assert inp.shape == (1, 32, 32, 1) and inp.dtype == "int8"
    # inputs in [0, 1] quantize with scale 1/255 and zero point -128
    assert inp.scale == pytest.approx(1 / 255, rel=1e-3) and inp.zero_point == -128
    assert m.outputs[0].shape == (1, 10) and m.outputs[0].dtype == "int8"
    weights = m.weight_tensors()
    assert len(weights) == 6 and all(w.dtype == "int8" for w in weights)
    conv1 = m.constant(weights[0]) if weights[0].shape[-1] == 1 else None
    assert all(m.constant(w).shape == w.shape for w in weights)
    del conv1


@pytest.mark.slow
def test_float_model_has_float_weights_and_no_quantization(tiny_variants: dict[str, Path]) -> None:
    m = read_model_file(tiny_variants["baseline-no_opt"])
    assert m.inputs[0].dtype == "float32" and m.inputs[0].scale == 0.0
    assert {w.dtype for w in m.weight_tensors()} == {"float32"}
    assert m.sparsity() == 0.0


@pytest.mark.slow
def test_sparsity_counts_pruned_zeros(tiny_variants: dict[str, Path]) -> None:
    pruned = read_model_file(tiny_variants["pruned-int8"])
    dense = read_model_file(tiny_variants["baseline-int8"])
    assert pruned.sparsity() > 0.4
    assert dense.sparsity() < 0.05
    arrays = [pruned.constant(t) for t in pruned.weight_tensors()]
    manual = sum(int(np.sum(a == 0)) for a in arrays) / sum(a.size for a in arrays)
    assert pruned.sparsity() == pytest.approx(manual)


def test_not_a_tflite_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.tflite"
    bad.write_text("hello, this is text")
    with pytest.raises(ModelError, match=r"notes\.tflite: not a TFLite flatbuffer"):
        read_model_file(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        read_model_file(tmp_path / "absent.tflite")


def test_truncated_flatbuffer_is_an_error_not_a_crash(tiny_variants: dict[str, Path]) -> None:
    data = tiny_variants["baseline-int8"].read_bytes()
    with pytest.raises(ModelError, match="corrupt TFLite flatbuffer"):
        read_model(data[:64], source="cut.tflite")
