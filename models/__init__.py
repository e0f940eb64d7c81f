"""Model factory: data sets, the reference CNN, optimization recipes, conversion, evaluation.

TensorFlow is imported lazily (see `models.tf`); importing this package stays cheap.
"""

import os

# tfmot 0.8.1 only works with Keras 2 (tf-keras); this must be set before TensorFlow is first imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ info/warning/cuInit lines

__version__ = "0.1.0"
