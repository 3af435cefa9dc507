"""LambdaLoss with NDCG weights (Wang et al., CIKM 2018), TF-Ranking's conventions.

Each ordered pair (y_i > y_j) of valid items is weighted by

    w_ij = |G_i − G_j| · δ_ij / IDCG,   δ_ij = |1/log2(1 + |r_i − r_j|) − 1/log2(2 + |r_i − r_j|)|

(the "NDCG-Loss2" discount difference, smooth fraction 1), gain G = label, ranks r from the
current scores (no gradient), pairs whose ranks both exceed ``topn`` dropped, IDCG the ideal
DCG@topn with discount 1/log2(rank + 1). The per-list loss is Σ w_ij · log(1 + e^{−(s_i − s_j)});
the batch loss is the mean over lists that have at least one ordered pair.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade.losses.ranknet import ordered_pairs, pair_logistic


def ranks_by_score(scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """1-based rank of each item by score (valid first, ties → lower index), no gradient."""
    s = tf.where(weights > 0, tf.stop_gradient(scores), -float("inf"))
    order = tf.argsort(s, axis=-1, direction="DESCENDING", stable=True)
    return tf.cast(tf.argsort(order, axis=-1, stable=True) + 1, scores.dtype)


def lambdaloss(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor, topn: int = 20) -> tf.Tensor:
    """LambdaLoss (NDCG-Loss2 weights, gain = label), mean over lists.

    Args:
      labels: ``[B, n]`` graded relevance (≥ 0 where valid).
      scores: ``[B, n]`` logits.
      weights: ``[B, n]`` validity.
      topn: NDCG cut-off of the weights.

    Returns:
      A scalar.
    """
    if int(topn) <= 0:
        raise ValueError(f"topn must be a positive integer, got topn={topn!r}")
    pairs = ordered_pairs(labels, weights)
    gain = tf.where(weights > 0, tf.maximum(labels, 0.0), 0.0)
    ranks = ranks_by_score(scores, weights)
    dist = tf.abs(ranks[:, :, None] - ranks[:, None, :])
    log2 = tf.math.log(tf.constant(2.0, scores.dtype))
    delta = tf.abs(log2 / tf.math.log1p(tf.maximum(dist, 1.0)) - log2 / tf.math.log(2.0 + dist))
    in_top = tf.cast(tf.logical_or(ranks[:, :, None] <= topn, ranks[:, None, :] <= topn), scores.dtype)
    ideal_gain = tf.sort(gain, axis=-1, direction="DESCENDING")[:, :topn]
    discounts = log2 / tf.math.log(tf.range(2, tf.shape(ideal_gain)[-1] + 2, dtype=scores.dtype))
    idcg = tf.reduce_sum(ideal_gain * discounts, axis=-1)
    w = pairs * in_top * tf.abs(gain[:, :, None] - gain[:, None, :]) * delta
    w = tf.stop_gradient(tf.math.divide_no_nan(w, idcg[:, None, None]))
    per_list = tf.reduce_sum(w * pair_logistic(scores), axis=[1, 2])
    has_pairs = tf.cast(tf.reduce_sum(pairs, axis=[1, 2]) > 0, scores.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_list * has_pairs), tf.reduce_sum(has_pairs))
