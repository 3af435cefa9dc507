"""RankNet pairwise logistic loss with TF-Ranking's list conventions (label −1 = padding).

tensorflow-ranking cannot be installed with TF ≥ 2.16, so the pairwise building blocks are
written here from their papers. RankNet (Burges et al., ICML 2005):

    L = Σ_{(i, j): y_i > y_j} log(1 + exp(−(s_i − s_j))) / #pairs

over the pairs of valid items of every list in the batch (normalised per pair count).
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


def ranknet_loss(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Mean pairwise logistic loss over all correctly-ordered valid pairs of the batch.

    Args:
      labels: ``[B, n]`` graded relevance.
      scores: ``[B, n]`` logits.
      weights: ``[B, n]`` validity.

    Returns:
      A scalar (0 when the batch has no ordered pair).
    """
    pairs = ordered_pairs(labels, weights)
    return tf.math.divide_no_nan(tf.reduce_sum(pairs * pair_logistic(scores)), tf.reduce_sum(pairs))
