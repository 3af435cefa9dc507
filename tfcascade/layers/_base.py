"""Shared plumbing of the operator layers: optional XLA compilation, NaN check, config."""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras, no_output_mask


class OpLayer(keras.layers.Layer):
    """A stateless layer around one tfcascade op.

    Args:
      jit_compile: run the op as ``tf.function(jit_compile=True)``. ``None`` (default) takes the
        class's ``JIT_COMPILE_DEFAULT``, chosen per operator from a CPU measurement of
        forward + backward at (batch, n, k) = (1024, 40, 10) and (1024, 4096, 2048)
        (docs/ops_relaxations.md): XLA helps DFTopK at both sizes and slows down LapSum (its
        sort + cumulative log-sum-exp), the O(n²) soft permutations, and the tournament at
        the large size.

    XLA compiles ``tf.debugging.Assert`` away, so under ``jit_compile`` the layer checks the
    scores for NaN itself, outside the compiled function.
    """

    JIT_COMPILE_DEFAULT = False
    compute_mask = no_output_mask

    def __init__(self, jit_compile: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.jit_compile = type(self).JIT_COMPILE_DEFAULT if jit_compile is None else bool(jit_compile)
        self._compiled = tf.function(self._op, jit_compile=True) if self.jit_compile else self._op

    def _op(self, *args, **kwargs):  # pragma: no cover - overridden
        raise NotImplementedError

    def _checked(self, scores, name: str = "scores"):
        """``scores`` with a NaN check attached when the op itself runs under XLA."""
        if not self.jit_compile:
            return scores
        scores = tf.convert_to_tensor(scores)
        if not scores.dtype.is_floating:
            return scores  # the op raises the TypeError
        ok = tf.logical_not(tf.reduce_any(tf.math.is_nan(scores)))
        if tf.executing_eagerly():
            if not bool(ok):
                raise tf.errors.InvalidArgumentError(None, None, f"{name} contains NaN")
            return scores
        with tf.control_dependencies([tf.debugging.Assert(ok, [f"{name} contains NaN"])]):
            return tf.identity(scores)

    def get_config(self) -> dict:
        return {**super().get_config(), "jit_compile": self.jit_compile}
