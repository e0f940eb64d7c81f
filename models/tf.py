"""Lazy, correctly configured imports of TensorFlow, tf-keras and tfmot (only where models are built)."""

from __future__ import annotations

import os
from functools import cache


@cache
def tensorflow():
    """Import TensorFlow with legacy Keras (tf-keras), as tfmot 0.8.1 requires."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # CPU only; avoids a cuInit error line on every run
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


@cache
def keras():
    """The tf-keras (Keras 2) package; Keras 3 models break tfmot."""
    tensorflow()
    import tf_keras

    return tf_keras


@cache
def tfmot():
    """tensorflow-model-optimization, imported after TensorFlow is configured."""
    tensorflow()
    import tensorflow_model_optimization

    return tensorflow_model_optimization
