"""tfcascade: train and serve multi-stage cascade rankers end to end with differentiable top-K.

TensorFlow Recommenders needs Keras 2 (``tf_keras``). Importing tfcascade therefore sets
``TF_USE_LEGACY_KERAS=1`` when TensorFlow has not been imported yet, and refuses to load when
TensorFlow was already imported with Keras 3 behind ``tf.keras``.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"


def _ensure_legacy_keras() -> None:
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        if os.environ["TF_USE_LEGACY_KERAS"].lower() not in ("1", "true", "yes"):
            raise ImportError(
                "tfcascade needs Keras 2 (tf_keras) but TF_USE_LEGACY_KERAS="
                f"{os.environ['TF_USE_LEGACY_KERAS']!r} is set. Unset it or set it to 1 before "
                "importing tensorflow."
            )
        return
    import tensorflow as tf

    version = getattr(tf.keras, "__version__", "")
    if version.startswith("3"):
        raise ImportError(
            f"TensorFlow was imported with Keras {version} behind tf.keras, but tfcascade and "
            "TensorFlow Recommenders need Keras 2 (tf_keras). Import tfcascade before tensorflow, "
            "or set the environment variable TF_USE_LEGACY_KERAS=1 before tensorflow is first "
            "imported (e.g. `export TF_USE_LEGACY_KERAS=1`)."
        )


_ensure_legacy_keras()
