"""How the stage models draw their initial weights.

Two schemes, named by ``initialization``:

- ``"reference"`` (default): PyTorch's defaults, which the LCRON (arXiv 2503.09492) and DFTopK
  (arXiv 2510.11472) reference code trains with. An embedding table is N(0, 1) with its padding
  row 0 at zero (``nn.Embedding(padding_idx=0)``); a dense layer's kernel and bias are both
  U(−1/√fan_in, 1/√fan_in) (``nn.Linear``: ``kaiming_uniform_(a=√5)`` and its bias rule).
- ``"keras"``: Keras' defaults for ``Dense`` (Glorot uniform kernel, zero bias) and embeddings
  N(0, 0.05²).

The scheme changes what a run learns, not only where it starts (the reference code itself
trains to another joint recall when its initialisation is swapped for the Keras one: ``docs/cascade.md``,
"Side by side with the official code"). ``"reference"`` is the default so that a comparison
with that code compares the losses and not the starting point.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfcascade._keras import keras

INITIALIZATIONS = ("reference", "keras")


def check_initialization(initialization: str) -> str:
    """``initialization`` if it names a scheme.

    Raises:
      ValueError: naming the value and the schemes.
    """
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {INITIALIZATIONS}, got initialization={initialization!r}")
    return initialization


@keras.utils.register_keras_serializable(package="tfcascade")
class NormalWithZeroRow(keras.initializers.Initializer):
    """N(0, stddev²) with row 0 (the padding / unknown id) set to zero, as
    ``nn.Embedding(padding_idx=0)`` initialises it.

    Args:
      stddev: standard deviation of the other rows.
    """

    def __init__(self, stddev: float = 1.0, seed: int | None = None):
        self.stddev = float(stddev)
        self.seed = seed
        self._normal = keras.initializers.RandomNormal(stddev=self.stddev, seed=seed)

    def __call__(self, shape, dtype=None, **kwargs):
        values = self._normal(shape, dtype=dtype)
        keep = tf.concat([tf.zeros([1], values.dtype), tf.ones([shape[0] - 1], values.dtype)], 0)
        return values * tf.reshape(keep, [-1] + [1] * (len(shape) - 1))

    def get_config(self) -> dict:
        return {"stddev": self.stddev, "seed": self.seed}


@keras.utils.register_keras_serializable(package="tfcascade")
class FanInDense(keras.layers.Dense):
    """``Dense`` initialised as PyTorch's ``nn.Linear``: kernel and bias U(−b, b), b = 1/√fan_in.

    The bound depends on the input width, so both initialisers are set when the layer is built.
    """

    def build(self, input_shape):
        bound = 1.0 / math.sqrt(int(tf.TensorShape(input_shape)[-1]))
        self.kernel_initializer = keras.initializers.RandomUniform(-bound, bound)
        self.bias_initializer = keras.initializers.RandomUniform(-bound, bound)
        super().build(input_shape)


def embedding_initializer(initialization: str) -> keras.initializers.Initializer:
    """The initialiser of an embedding table under ``initialization``."""
    if check_initialization(initialization) == "reference":
        return NormalWithZeroRow(1.0)
    return keras.initializers.RandomNormal(stddev=0.05)


def dense(units: int, initialization: str, activation=None, use_bias: bool = True, **kwargs) -> keras.layers.Dense:
    """A ``Dense`` layer initialised under ``initialization`` (``kwargs``: ``name``, ``dtype``, …)."""
    cls = FanInDense if check_initialization(initialization) == "reference" else keras.layers.Dense
    return cls(units, activation=activation, use_bias=use_bias, **kwargs)
