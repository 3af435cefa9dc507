"""Shared plumbing of the operator layers: optional XLA compilation and config."""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras


class OpLayer(keras.layers.Layer):
    """A stateless layer around one tfcascade op.

    Args:
      jit_compile: run the op as ``tf.function(jit_compile=True)``. Off by default: on CPU,
        XLA is not faster for these ops at the benchmark shapes (bench/results/topk.md), and
        plain TF ops keep SavedModels loadable by any TF Serving build.
    """

    def __init__(self, jit_compile: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.jit_compile = bool(jit_compile)
        self._compiled = tf.function(self._op, jit_compile=True) if self.jit_compile else self._op

    def _op(self, *args, **kwargs):  # pragma: no cover - overridden
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**super().get_config(), "jit_compile": self.jit_compile}
