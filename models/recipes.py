"""Training recipes: baseline, pruned, qat, clustered and distilled, each returning a Keras model.

Every derived recipe starts from a clone of the baseline (the tfmot wrappers would otherwise wrap and
modify the baseline's own layer objects), and reports what it achieved (e.g. the real sparsity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.cnn import build_cnn, compile_cnn
from models.datasets import Dataset
from models.errors import ModelError
from models.tf import keras, tensorflow, tfmot

RECIPE_KINDS = ("baseline", "pruned", "qat", "clustered", "distilled")


@dataclass
class Trained:
    """A trained Keras model plus what the recipe measured while making it."""

    model: object
    info: dict = field(default_factory=dict)
    weights_before: np.ndarray | None = None  # flattened Conv/Dense kernels before pruning/clustering
    weights_after: np.ndarray | None = None


def _one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[y]


def kernels(model) -> np.ndarray:
    """All Conv2D/Dense kernels of a model, flattened into one array (for histograms and sparsity)."""
    k = keras()
    parts = [
        layer.kernel.numpy().ravel()
        for layer in model.layers
        if isinstance(layer, k.layers.Conv2D | k.layers.Dense) and hasattr(layer, "kernel")
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def clone(model):
    """A fresh copy of a plain Keras model with the same weights (never shares layer objects)."""
    k = keras()
    copy = k.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _fine_tune(model, ds: Dataset, arch: dict, cfg: dict, callbacks: tuple = ()) -> None:
    """Compile with the reference optimizer at the recipe's learning rate and fit for the recipe's epochs."""
    compile_cnn(model, cfg["learning_rate"])
    model.fit(
        ds.x_train,
        _one_hot(ds.y_train, arch["num_classes"]),
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        verbose=0,
        callbacks=list(callbacks),
    )


def train_baseline(ds: Dataset, arch: dict, train: dict, log: Callable[[str], None]) -> Trained:
    """Train the reference CNN from scratch with the reference optimizer settings."""
    model = build_cnn(**arch, seed=train["seed"])
    compile_cnn(model, train["learning_rate"])
    hist = model.fit(
        ds.x_train,
        _one_hot(ds.y_train, arch["num_classes"]),
        epochs=train["epochs"],
        batch_size=train["batch_size"],
        verbose=0,
        shuffle=True,
    )
    return Trained(model, {"final_train_accuracy": float(hist.history["accuracy"][-1])})


def prune(base, ds: Dataset, arch: dict, cfg: dict, log: Callable[[str], None]) -> Trained:
    """Magnitude pruning to a target sparsity with a PolynomialDecay schedule, fine-tuned and stripped."""
    mot = tfmot()
    model = clone(base)
    steps_per_epoch = math.ceil(len(ds.x_train) / cfg["batch_size"])
    end_step = max(1, int(steps_per_epoch * cfg["epochs"] * cfg["schedule_fraction"]))
    # PolynomialDecay's default frequency (100) never fires on short fine-tunes: set it explicitly.
    schedule = mot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=cfg["target_sparsity"],
        begin_step=0,
        end_step=end_step,
        frequency=min(cfg["frequency"], end_step),
    )
    pruned = mot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _fine_tune(pruned, ds, arch, cfg, callbacks=(mot.sparsity.keras.UpdatePruningStep(),))
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    compile_cnn(stripped, cfg["learning_rate"])
    after = kernels(stripped)
    achieved = float(np.mean(after == 0))
    target = cfg["target_sparsity"]
    if achieved < 0.9 * target:
        raise ModelError(
            f"pruning reached {achieved:.1%} sparsity, target {target:.0%}: "
            "raise the recipe's epochs or lower its frequency"
        )
    return Trained(stripped, {"kernel_sparsity": achieved}, kernels(base), after)


def fold_batchnorm(model):
    """Fold every BatchNormalization into the Conv2D/Dense before it; QAT then quantizes Dense layers too.

    tfmot's QAT folds Conv+BN but not Dense+BN; without this the Dense layers stay float.
    """
    k = keras()
    layers = model.layers
    new_layers = [k.layers.InputLayer(input_shape=model.input_shape[1:])]
    weights: list[tuple[int, list[np.ndarray]]] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, k.layers.Conv2D | k.layers.Dense) and isinstance(
            nxt, k.layers.BatchNormalization
        ):
            gamma, beta, mean, var = nxt.get_weights()
            w, b = layer.get_weights() if layer.use_bias else (layer.get_weights()[0], 0.0)
            s = gamma / np.sqrt(var + nxt.epsilon)
            cfg = layer.get_config()
            cfg["use_bias"] = True
            new_layers.append(type(layer).from_config(cfg))
            weights.append((len(new_layers) - 1, [w * s, (b - mean) * s + beta]))
            i += 2
            continue
        new_layers.append(type(layer).from_config(layer.get_config()))
        if layer.get_weights():
            weights.append((len(new_layers) - 1, layer.get_weights()))
        i += 1
    folded = k.Sequential(new_layers, name=f"{model.name}_folded")
    for index, w in weights:
        folded.layers[index - 1].set_weights(w)  # Sequential drops the InputLayer from .layers
    return folded


def quantization_aware(base, ds: Dataset, arch: dict, cfg: dict, log: Callable[[str], None]) -> Trained:
    """Quantization-aware fine-tuning (tfmot) of the baseline with every BatchNorm folded first."""
    mot = tfmot()
    folded = fold_batchnorm(base)
    qat = mot.quantization.keras.quantize_model(folded)
    _fine_tune(qat, ds, arch, cfg)
    return Trained(qat, {})


def cluster(base, ds: Dataset, arch: dict, cfg: dict, log: Callable[[str], None]) -> Trained:
    """Weight clustering (k-means++ centroids) of Conv/Dense kernels, fine-tuned and stripped."""
    mot = tfmot()
    model = clone(base)
    clustered = mot.clustering.keras.cluster_weights(
        model,
        number_of_clusters=cfg["clusters"],
        cluster_centroids_init=mot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
    )
    if clustered is None:
        raise ModelError("tfmot cluster_weights returned None: the model is not a tf-keras (Keras 2) model")
    _fine_tune(clustered, ds, arch, cfg)
    stripped = mot.clustering.keras.strip_clustering(clustered)
    compile_cnn(stripped, cfg["learning_rate"])
    return Trained(stripped, {"clusters": cfg["clusters"]}, kernels(base), kernels(stripped))


def distill(base, ds: Dataset, arch: dict, cfg: dict, log: Callable[[str], None]) -> Trained:
    """Train a smaller student on hard labels and the teacher's temperature-softened outputs."""
    tf, k = tensorflow(), keras()
    n = arch["num_classes"]
    student_arch = {**arch, **cfg["student"]}
    student = build_cnn(**student_arch, seed=cfg["seed"], name="student_cnn")
    temperature, alpha = float(cfg["temperature"]), float(cfg["alpha"])
    teacher_probs = base.predict(ds.x_train, verbose=0, batch_size=256)
    # softmax(logits / T) == softmax(log(p) / T): the teacher's logits are log-probabilities up to a constant.
    soft = tf.nn.softmax(np.log(np.clip(teacher_probs, 1e-8, 1.0)) / temperature).numpy()
    targets = np.concatenate([_one_hot(ds.y_train, n), soft], axis=1)

    def loss(y_true, logits):
        hard, soft_t = y_true[:, :n], y_true[:, n:]
        ce = k.losses.categorical_crossentropy(hard, tf.nn.softmax(logits))
        kl = k.losses.kl_divergence(soft_t, tf.nn.softmax(logits / temperature))
        return alpha * ce + (1.0 - alpha) * temperature**2 * kl

    logits_model = k.Model(student.inputs, student.get_layer("logits").output)
    logits_model.compile(
        optimizer=k.optimizers.Adam(
            learning_rate=cfg["learning_rate"], beta_1=0.9, beta_2=0.999, epsilon=1e-7
        ),
        loss=loss,
    )
    logits_model.fit(ds.x_train, targets, epochs=cfg["epochs"], batch_size=cfg["batch_size"], verbose=0)
    compile_cnn(student, cfg["learning_rate"])
    return Trained(
        student,
        {"student_params": int(student.count_params()), "teacher_params": int(base.count_params())},
    )


DERIVED = {"pruned": prune, "qat": quantization_aware, "clustered": cluster, "distilled": distill}
