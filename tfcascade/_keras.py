"""The Keras module tfcascade builds on (``tf_keras`` or Keras 3), in one place.

Chosen once per process by ``tfcascade._backend`` (see its rule); every tfcascade layer, loss
and model subclasses this module's classes.
"""

from tfcascade._backend import KERAS, TF_KERAS

if KERAS == TF_KERAS:
    import tf_keras as keras
else:
    import keras

__all__ = ["KERAS", "keras"]
