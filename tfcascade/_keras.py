"""The Keras 2 implementation tfcascade builds on (``tf_keras``), in one place."""

import tfcascade  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

__all__ = ["keras"]
