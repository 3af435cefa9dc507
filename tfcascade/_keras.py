"""The Keras module tfcascade builds on (``tf_keras`` or Keras 3), in one place.

Chosen once per process by ``tfcascade._backend`` (see its rule); every tfcascade layer, loss
and model subclasses this module's classes. The layers and losses are one code base for both
Keras: where the two differ, the difference is handled here.
"""

import tensorflow as tf

from tfcascade._backend import KERAS, TF_KERAS

if KERAS == TF_KERAS:
    import tf_keras as keras
else:
    import keras


def no_output_mask(layer: keras.layers.Layer, inputs, mask=None) -> None:
    """``compute_mask`` of the tfcascade layers and losses that take a ``mask`` call argument
    (``compute_mask = no_output_mask`` in the class): their outputs carry no Keras mask.

    That ``mask`` says which items of a list are valid; it is an input of the computation, not
    Keras's mask propagation, and what the layer returns (a membership, a permutation, a loss)
    is not masked the same way. tf_keras drops it already; Keras 3 would drop it too but warn,
    on every call given a ``mask``, that the layer "destroys the mask information".
    """
    return None


def build_sublayer(layer: keras.layers.Layer, input_shape) -> None:
    """Builds ``layer``, a sublayer, from its parent's ``build`` with the variable names a call
    would give (``parent/sublayer/kernel``): Keras 3 opens the sublayer's name scope itself,
    tf_keras only when the sublayer is called."""
    if KERAS == TF_KERAS:
        with tf.name_scope(layer.name):
            layer.build(input_shape)
    else:
        layer.build(input_shape)


__all__ = ["KERAS", "build_sublayer", "keras", "no_output_mask"]
