"""tfcascade: train and serve multi-stage cascade rankers end to end with differentiable top-K.

Importing tfcascade imports neither TensorFlow nor Keras; it only decides which Keras the
process uses (``tfcascade._backend``): Keras 2 (``tf_keras``, needed by TensorFlow
Recommenders and so by ``CascadeModel``) unless the program chose Keras 3 — ``tf.keras``
already bound to Keras 3, ``TF_USE_LEGACY_KERAS`` set to another value than 1, or ``keras``
imported before ``tensorflow``. ``tfcascade.ops``, ``.layers`` and ``.losses`` work in
both; ``keras_version()`` says which one this process has.
"""

from __future__ import annotations

from tfcascade._backend import KERAS as _KERAS

__version__ = "0.1.0"


def keras_version() -> str:
    """``"tf_keras"`` (Keras 2) or ``"keras_3"``: the Keras tfcascade's layers subclass here."""
    return _KERAS


__all__ = ["__version__", "keras_version"]
