"""LambdaLoss with DCG weights (Wang et al., CIKM 2018), TF-Ranking's construction.

For valid items i, j with y_i > y_j, ranks r from the current scores (no gradient, 1-based,
ties → lower index), gain G = label and discount D(r) = 1/ln(1 + r):

    u_ij = |D(|r_i − r_j|) − D(|r_i − r_j| + 1)|   if r_i ≤ topn or r_j ≤ topn, else 0
    v_ij = |D_topn(r_i) − D_topn(r_j)|,            D_topn(r) = D(r)·[r ≤ topn]
    w_ij = |G_i − G_j| / IDCG · ((1 − f)·u_ij + f·v_ij)        (f = smooth_fraction)

(``u`` is the "NDCG-Loss2" discount, ``v`` LambdaRank's; TF-Ranking's ``DCGLambdaWeight`` with
``normalized=True``). IDCG = Σ_r G_(r)·D(r) over the ideal order, the first ``idcg_topn`` ranks
(TF-Ranking: topn) or the whole list (``None``, the LCRON reference code). The base of the
logarithm cancels between D and IDCG. The per-list loss is Σ_ij w_ij · log(1 + e^{−(s_i − s_j)}).
``bench/lambdaloss_tfranking.py`` checks it against TF-Ranking's ``PairwiseLogisticLoss``.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade.losses.ranknet import ordered_pairs, pair_logistic


def ranks_by_score(scores: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """1-based rank of each item by score (valid first, ties → lower index), no gradient."""
    s = tf.where(weights > 0, tf.stop_gradient(scores), -float("inf"))
    order = tf.argsort(s, axis=-1, direction="DESCENDING", stable=True)
    return tf.cast(tf.argsort(order, axis=-1, stable=True) + 1, scores.dtype)


def _discount(rank: tf.Tensor) -> tf.Tensor:
    return 1.0 / tf.math.log1p(rank)


def check_options(topn: int, smooth_fraction: float, idcg_topn: int | None) -> None:
    """Raises ValueError naming the first bad option."""
    if int(topn) <= 0:
        raise ValueError(f"topn must be a positive integer, got topn={topn!r}")
    if not 0.0 <= float(smooth_fraction) <= 1.0:
        raise ValueError(f"smooth_fraction must be in [0, 1], got smooth_fraction={smooth_fraction!r}")
    if idcg_topn is not None and int(idcg_topn) <= 0:
        raise ValueError(f"idcg_topn must be a positive integer or None, got idcg_topn={idcg_topn!r}")


def lambda_pair_weights(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor, topn: int = 30,
                        smooth_fraction: float = 0.8, idcg_topn: int | None = None) -> tf.Tensor:
    """The stop-gradient pair weights ``w [B, n, n]`` (0 unless y_i > y_j, both valid).

    Args:
      labels: ``[B, n]`` graded relevance (≥ 0 where valid).
      scores: ``[B, n]`` logits (only their order is used).
      weights: ``[B, n]`` validity.
      topn: the DCG cut-off of the pair discounts.
      smooth_fraction: f ∈ [0, 1], the share of LambdaRank's discount.
      idcg_topn: ranks of the ideal DCG (None = the whole list).
    """
    check_options(topn, smooth_fraction, idcg_topn)
    dtype = scores.dtype
    pairs = ordered_pairs(labels, weights)
    gain = tf.where(weights > 0, tf.maximum(labels, 0.0), 0.0)
    ranks = ranks_by_score(scores, weights)
    dist = tf.abs(ranks[:, :, None] - ranks[:, None, :])
    in_top = tf.logical_or(ranks[:, :, None] <= topn, ranks[:, None, :] <= topn)
    u = tf.where(in_top & (dist > 0), tf.abs(_discount(tf.maximum(dist, 1.0)) - _discount(dist + 1.0)), 0.0)
    d_top = tf.where(ranks <= topn, _discount(ranks), tf.zeros([], dtype))
    v = tf.abs(d_top[:, :, None] - d_top[:, None, :])
    # As the LCRON reference: a smooth fraction of at most 0.001 is u alone.
    discount = (1.0 - smooth_fraction) * u + smooth_fraction * v if smooth_fraction > 0.001 else u
    ideal = tf.sort(gain, axis=-1, direction="DESCENDING")
    if idcg_topn is not None:
        ideal = ideal[:, :idcg_topn]
    idcg = tf.reduce_sum(ideal * _discount(tf.range(1, tf.shape(ideal)[-1] + 1, dtype=dtype)), axis=-1)
    w = pairs * tf.abs(gain[:, :, None] - gain[:, None, :]) * discount
    return tf.stop_gradient(tf.math.divide_no_nan(w, idcg[:, None, None]))


def lambdaloss(labels: tf.Tensor, scores: tf.Tensor, weights: tf.Tensor, topn: int = 30,
               smooth_fraction: float = 0.8, idcg_topn: int | None = None) -> tf.Tensor:
    """Per-list LambdaLoss Σ_ij w_ij · log(1 + e^{−(s_i − s_j)}), ``[B]``.

    Args: as :func:`lambda_pair_weights`.

    Returns:
      ``[B]``, 0 for a list without ordered pairs.
    """
    w = lambda_pair_weights(labels, scores, weights, topn, smooth_fraction, idcg_topn)
    return tf.reduce_sum(w * pair_logistic(scores), axis=[1, 2])
