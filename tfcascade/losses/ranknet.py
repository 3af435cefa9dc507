"""The pairwise building blocks of RankNet (Burges et al., ICML 2005) with TF-Ranking's list
conventions (label −1 = padding): the ordered pairs of a list and their logistic loss
log(1 + exp(−(s_i − s_j))). FS-RankNet (``fs_ranknet.py``) and LambdaLoss (``lambdaloss.py``)
are built from them.
"""

from __future__ import annotations

import tensorflow as tf


def ordered_pairs(labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``[B, n, n]`` float, 1 where item i should beat item j (both valid, y_i > y_j).

    Args:
      labels: ``[B, n]`` graded relevance.
      weights: ``[B, n]`` validity (> 0 = valid).
    """
    valid = weights > 0
    both = tf.logical_and(valid[:, :, None], valid[:, None, :])
    return tf.cast(tf.logical_and(both, labels[:, :, None] > labels[:, None, :]), labels.dtype)


def pair_logistic(scores: tf.Tensor) -> tf.Tensor:
    """``[B, n, n]``: log(1 + exp(−(s_i − s_j))) for every pair (i, j)."""
    return tf.nn.softplus(-(scores[:, :, None] - scores[:, None, :]))
