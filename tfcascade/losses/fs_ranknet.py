"""FS-RankNet: the full-stage pairwise baseline of LCRON (arXiv 2503.09492, section 5), as its
reference code computes it.

The logged list falls into categories: the ground truth (the top-k labels: rank_pos, or
rerank_pos with three stages), then one category per remaining label value (rank_neg,
coarse_neg, prerank_neg, …; sampled negatives form the last). Every category c but the last
beats every item of the categories after it; pairs inside a category (the ground truth
included) are not used. Each winning category's pairs are normalised on their own, over the
batch, and the terms are summed:

    RankNet(s) = Σ_c  Σ_b Σ_{i ∈ c, j after c} log(1 + e^{−(s_i − s_j)}) / Σ_b #pairs_b(c)
    L = Σ_t RankNet(s_t)

(the reference divides by (#items after c) · Σ_b #valid items of c: the same number for lists
without padding.)
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.ranknet import pair_logistic


def category_ranknet(category: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Σ over winning categories of their mean pairwise logistic loss.

    Args:
      category: ``[B, n]`` value per item; a larger value beats a smaller one, equal values
        form a category (compared across the batch).
      scores: ``[B, n]`` logits.
      weights: ``[B, n]`` validity.

    Returns:
      A scalar.
    """
    valid = weights > 0
    both = tf.logical_and(valid[:, :, None], valid[:, None, :])
    pairs = tf.cast(tf.logical_and(both, category[:, :, None] > category[:, None, :]), scores.dtype)
    loss_i = tf.reshape(tf.reduce_sum(pairs * pair_logistic(scores), axis=-1), [-1])
    count_i = tf.reshape(tf.reduce_sum(pairs, axis=-1), [-1])
    values, index = tf.unique(tf.reshape(tf.where(valid, category, tf.zeros([], category.dtype)), [-1]))
    groups = tf.shape(values)[0]
    loss_c = tf.math.unsorted_segment_sum(loss_i, index, groups)
    count_c = tf.math.unsorted_segment_sum(count_i, index, groups)
    return tf.reduce_sum(tf.math.divide_no_nan(loss_c, count_c))


@keras.utils.register_keras_serializable(package="tfcascade")
class FSRankNetLoss(CascadeLoss):
    """Σ over stages of the category RankNet on the full list (terms ``ranknet_stage{t}``)."""

    def compute_terms(self, labels, scores, weights, gt):
        top = tf.reduce_max(tf.where(weights > 0, labels, tf.zeros([], labels.dtype))) + 1.0
        category = tf.where(gt > 0, top, labels)
        return {f"ranknet_stage{t}": category_ranknet(category, s, weights) for t, s in enumerate(scores)}
