"""Small numeric helpers shared by the soft top-K operators."""

from __future__ import annotations

import tensorflow as tf


def valid_mask(x: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Boolean validity of each item (all True without a mask)."""
    return tf.ones_like(x, dtype=tf.bool) if mask is None else mask


def clamp_infinite(x: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Replaces ±inf by values just beyond the row's finite range, keeping their order.

    Soft operators mix scores arithmetically (differences, weighted sums), where a single
    infinity becomes NaN. ``+inf`` becomes ``max_finite + 1 + |max_finite|`` and ``-inf``
    ``min_finite - 1 - |min_finite|``, so infinite items still rank first / last. Invalid
    (masked) items are set to 0; callers exclude them.
    """
    finite = tf.logical_and(valid, tf.math.is_finite(x))
    big = x.dtype.max
    hi = tf.reduce_max(tf.where(finite, x, -big), axis=-1, keepdims=True)
    lo = tf.reduce_min(tf.where(finite, x, big), axis=-1, keepdims=True)
    hi = tf.where(hi == -big, tf.zeros_like(hi), hi)  # row without finite values
    lo = tf.where(lo == big, tf.zeros_like(lo), lo)
    x = tf.where(tf.math.is_inf(x) & (x > 0), hi + 1 + tf.abs(hi), x)
    x = tf.where(tf.math.is_inf(x) & (x < 0), lo - 1 - tf.abs(lo), x)
    return tf.where(valid, x, tf.zeros_like(x))


def as_dtype(value, dtype: tf.DType) -> tf.Tensor:
    """A Python number or tensor in ``dtype`` (``tf.cast`` of a Python float would round
    through float32 first)."""
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)
