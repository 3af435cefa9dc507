"""Uncertainty weighting of multi-task losses (Kendall et al., CVPR 2018), as LCRON uses it.

    L = Σ_i ½ / w_i² · L_i + Σ_i log |w_i| + Σ_j L_j^{unweighted}

with one trainable w_i per weighted term, initialised to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from tfcascade._keras import keras


@keras.utils.register_keras_serializable(package="tfcascade")
class UncertaintyWeighting(keras.layers.Layer):
    """Args: names: the weighted terms (one trainable w each)."""

    def __init__(self, names: Sequence[str], **kwargs):
        kwargs.setdefault("autocast", False)  # keep float64 inputs float64 (gradient checks)
        super().__init__(**kwargs)
        self.names = list(names)
        self.w = {n: self.add_weight(name=f"w_{n}", shape=(), initializer="ones", trainable=True)
                  for n in self.names}
        self.built = True  # its weights exist from the start: nothing for Keras to build

    def call(self, weighted: Mapping[str, tf.Tensor], unweighted: Sequence[tf.Tensor] = ()):
        dtype = next(iter(weighted.values())).dtype
        total = tf.add_n([tf.zeros([], dtype)] + list(unweighted))
        for name in self.names:
            w = tf.cast(self.w[name], dtype)
            total += 0.5 / tf.square(w) * weighted[name] + tf.math.log(tf.abs(w) + 1e-12)
        return total

    def get_config(self) -> dict:
        return {**super().get_config(), "names": list(self.names)}
