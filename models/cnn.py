"""The reference CNN for 32x32 digit images: three Conv-BN-ReLU-MaxPool blocks, then three Dense layers."""

from __future__ import annotations

from collections.abc import Sequence

from models.tf import keras


def build_cnn(
    *,
    input_shape: Sequence[int] = (32, 32, 1),
    filters: Sequence[int] = (32, 64, 128),
    dense_units: Sequence[int] = (256, 128),
    num_classes: int = 10,
    bn_momentum: float = 0.9,
    seed: int = 0,
    name: str = "reference_cnn",
):
    """Build the (uncompiled) reference architecture; softmax is its own layer so logits stay reachable."""
    k = keras()
    k.utils.set_random_seed(seed)
    layers = [k.layers.InputLayer(input_shape=tuple(input_shape))]
    for i, f in enumerate(filters):
        layers += [
            k.layers.Conv2D(f, 3, padding="same", name=f"conv{i + 1}"),
            k.layers.BatchNormalization(momentum=bn_momentum, name=f"conv{i + 1}_bn"),
            k.layers.ReLU(name=f"conv{i + 1}_relu"),
            k.layers.MaxPooling2D(2, name=f"pool{i + 1}"),
        ]
    layers.append(k.layers.Flatten(name="flatten"))
    for i, units in enumerate(dense_units):
        layers += [
            k.layers.Dense(units, name=f"dense{i + 1}"),
            k.layers.BatchNormalization(momentum=bn_momentum, name=f"dense{i + 1}_bn"),
            k.layers.ReLU(name=f"dense{i + 1}_relu"),
        ]
    layers += [k.layers.Dense(num_classes, name="logits"), k.layers.Softmax(name="softmax")]
    return k.Sequential(layers, name=name)


def compile_cnn(model, learning_rate: float = 3e-4) -> None:
    """Compile with the reference study's optimizer: Adam(lr, 0.9, 0.999, 1e-7), categorical cross-entropy."""
    k = keras()
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
