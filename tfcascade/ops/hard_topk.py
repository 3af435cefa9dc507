"""The exact (hard) top-k membership — the reference every soft operator approximates."""

from __future__ import annotations

import tensorflow as tf

from tfcascade.ops._common import valid_mask
from tfcascade.ops._validate import check_k, check_mask, check_scores, static_k
from tfcascade.ops.select import kth_largest_pair


def hard_topk_mask(scores, k, mask=None) -> tf.Tensor:
    """1.0 for the k largest valid scores of each row, 0.0 elsewhere.

    Exactly k ones per row: among items tied with x_[k], the lower indices win. O(n) per row
    (selection plus one cumulative count).

    Args:
      scores: float ``[..., n]``.
      k: Python int or int tensor of the batch shape, 1 ≤ k ≤ #valid.
      mask: optional ``[..., n]`` validity.

    Returns:
      float ``[..., n]`` in the dtype of ``scores``.
    """
    k = static_k(k)
    x, out_dtype = check_scores(scores)
    mask = check_mask(mask, x)
    k_t = check_k(k, x, mask)
    valid = valid_mask(x, mask)
    kth, _ = kth_largest_pair(x, k if isinstance(k, int) else k_t, valid)
    above = tf.logical_and(valid, x > kth)
    tied = tf.logical_and(valid, x == kth)
    need = tf.reshape(k_t, tf.concat([tf.shape(k_t), tf.ones([tf.rank(x) - tf.rank(k_t)], tf.int32)], 0)) - \
        tf.reduce_sum(tf.cast(above, tf.int32), axis=-1, keepdims=True)
    take_tied = tf.logical_and(tied, tf.cumsum(tf.cast(tied, tf.int32), axis=-1) <= need)
    return tf.cast(tf.logical_or(above, take_tied), out_dtype)
