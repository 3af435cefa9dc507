"""Pairwise ranking losses with TF-Ranking's conventions (padded lists, label −1 = padding).

tensorflow-ranking cannot be installed with TF ≥ 2.16, so RankNet and LambdaLoss are written
here from their papers:

- RankNet (Burges et al., 2005): Σ_{y_i > y_j} log(1 + e^{−(s_i − s_j)}) over valid pairs.
- LambdaLoss with NDCG weights (Wang et al., CIKM 2018): each pair weighted by
  |G_i − G_j|·δ_ij / IDCG with the "NDCG-Loss2" discount difference
  δ_ij = |1/log2(1 + |r_i − r_j|) − 1/log2(2 + |r_i − r_j|)| (smooth fraction 1), ranks r from
  the current scores, pairs whose ranks both exceed ``topn`` dropped, gain G = label.
"""

from __future__ import annotations

import tensorflow as tf


def _pairs(labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """[B, n, n] float: 1 where item i should beat item j (both valid, y_i > y_j)."""
    valid = weights > 0
    both = tf.logical_and(valid[:, :, None], valid[:, None, :])
    return tf.cast(tf.logical_and(both, labels[:, :, None] > labels[:, None, :]), labels.dtype)


def _pair_logistic(scores: tf.Tensor) -> tf.Tensor:
    return tf.nn.softplus(-(scores[:, :, None] - scores[:, None, :]))


def ranknet_loss(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Mean pairwise logistic loss over all correctly-ordered valid pairs."""
    pairs = _pairs(labels, weights)
    return tf.math.divide_no_nan(tf.reduce_sum(pairs * _pair_logistic(scores)), tf.reduce_sum(pairs))


def ranks_by_score(scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """1-based rank of each item by score (valid first, ties → lower index), no gradient."""
    s = tf.where(weights > 0, tf.stop_gradient(scores), -float("inf"))
    order = tf.argsort(s, axis=-1, direction="DESCENDING", stable=True)
    return tf.cast(tf.argsort(order, axis=-1, stable=True) + 1, scores.dtype)


def lambdaloss(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor, topn: int = 20) -> tf.Tensor:
    """LambdaLoss (NDCG-Loss2 weights, gain = label), mean over requests."""
    pairs = _pairs(labels, weights)
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
    per_request = tf.reduce_sum(w * _pair_logistic(scores), axis=[1, 2])
    has_pairs = tf.cast(tf.reduce_sum(pairs, axis=[1, 2]) > 0, scores.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_request * has_pairs), tf.reduce_sum(has_pairs))
