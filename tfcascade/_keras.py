"""The Keras 2 implementation tfcascade builds on (``tf_keras``), in one place."""

import tf_keras as keras

import tfcascade  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

__all__ = ["keras"]
