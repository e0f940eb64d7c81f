"""Recipe building blocks that must be exact: BatchNorm folding and cloning."""

import numpy as np
import pytest

from models.cnn import build_cnn

pytestmark = pytest.mark.slow


def _randomize_batchnorm(model, rng: np.random.Generator) -> None:
    from models.tf import keras

    for layer in model.layers:
        if isinstance(layer, keras().layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.2, 3, n)]
            )


def test_fold_batchnorm_keeps_the_function_and_removes_every_bn() -> None:
    from models.recipes import fold_batchnorm
    from models.tf import keras

    rng = np.random.default_rng(3)
    model = build_cnn(filters=(4, 6, 8), dense_units=(12, 10), seed=1)
    _randomize_batchnorm(model, rng)
    folded = fold_batchnorm(model)
    assert not any(isinstance(layer, keras().layers.BatchNormalization) for layer in folded.layers)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-4, atol=1e-5)


def test_clone_does_not_share_layers() -> None:
    from models.recipes import clone

    model = build_cnn(filters=(2, 2, 2), dense_units=(4, 4))
    copy = clone(model)
    assert all(a is not b for a, b in zip(model.layers, copy.layers, strict=True))
    w = copy.get_layer("conv1").kernel
    w.assign(w + 1.0)
    assert not np.allclose(copy.get_layer("conv1").kernel.numpy(), model.get_layer("conv1").kernel.numpy())


def test_convert_rejects_unknown_mode_and_missing_representative_data() -> None:
    from models.convert import convert
    from models.errors import ModelError

    model = build_cnn(filters=(2, 2, 2), dense_units=(4, 4))
    with pytest.raises(ModelError, match="unknown conversion mode 'int4'"):
        convert(model, "int4")
    with pytest.raises(ModelError, match="needs representative data"):
        convert(model, "int8", None)


def test_lut_refuses_unclustered_weights(tiny_variants) -> None:
    from models.convert import lut_compress, lut_plan
    from models.errors import ModelError

    data = tiny_variants["baseline-int8"].read_bytes()
    assert lut_plan(data) == [] or all(bits <= 7 for _, bits in lut_plan(data))
    clustered = tiny_variants["clustered-int8"].read_bytes()
    plan = lut_plan(clustered)
    assert len(plan) == 6 and all(bits <= 3 for _, bits in plan)  # 8 clusters -> at most 3 bits
    if not lut_plan(data):
        with pytest.raises(ModelError, match="at most 128 distinct values"):
            lut_compress(data)
