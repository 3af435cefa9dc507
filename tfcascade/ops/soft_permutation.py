"""Soft permutation matrices: NeuralSort and SoftSort, and top-q membership from them.

NeuralSort (Grover et al., ICLR 2019, arXiv 1903.08850), as used by LCRON (arXiv 2503.09492)
and ARF: row r (1-based rank, descending scores) of the relaxed permutation is

    P̂_r = softmax(((n + 1 − 2r)·x − A·1) / τ),   (A·1)_j = Σ_i |x_j − x_i|.

SoftSort (Prillo & Eisenschlos, ICML 2020, arXiv 2006.16038):

    P̂_r = softmax(−|sort(x)_r − x| / τ).

Both are O(n²) in time and memory per list (``A·1`` is a row sum, never an O(n³) matmul).

Masks: with ``n_v`` valid items in a row, the formulas run over the valid items only
(``n`` becomes ``n_v``; masked columns get no mass in rows 1..n_v). Rows ``n_v+1..n`` spread
their mass uniformly over the masked columns, so the matrix stays doubly stochastic and masked
items "sort last" without receiving gradient.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade.ops._common import as_dtype, clamp_infinite, valid_mask
from tfcascade.ops._validate import check_mask, check_positive, check_scores


def _prepare(scores, tau, mask):
    x, out_dtype = check_scores(scores)
    tau = check_positive(tau, "tau")
    mask = check_mask(mask, x)
    valid = valid_mask(x, mask)
    x = clamp_infinite(x, valid)
    return x, as_dtype(tau, x.dtype), valid, out_dtype


def _finish(logits: tf.Tensor, valid: tf.Tensor, out_dtype: tf.DType) -> tf.Tensor:
    """Softmax over valid columns for valid rows; uniform over masked columns for the rest."""
    dtype = logits.dtype
    vf = tf.cast(valid, dtype)
    n = tf.cast(tf.shape(vf)[-1], dtype)
    n_valid = tf.reduce_sum(vf, axis=-1, keepdims=True)  # [..., 1]
    col_valid = valid[..., None, :]
    logits = tf.where(col_valid, logits, tf.fill(tf.shape(logits), tf.constant(-0.5, dtype) * dtype.max))
    p_valid = tf.nn.softmax(logits, axis=-1)
    ranks = tf.range(1, tf.shape(vf)[-1] + 1, dtype=dtype)
    row_valid = ranks <= n_valid  # [..., n]
    masked_cols = (1.0 - vf) / tf.maximum(n - n_valid, 1.0)  # [..., n]
    p_masked = tf.broadcast_to(masked_cols[..., None, :], tf.shape(p_valid))
    perm = tf.where(row_valid[..., :, None], p_valid, p_masked)
    return tf.cast(perm, out_dtype)


def neural_sort(scores, tau: float = 1.0, mask=None) -> tf.Tensor:
    """NeuralSort relaxed permutation (rows = ranks, descending).

    Args:
      scores: float tensor ``[..., n]``.
      tau: temperature > 0; smaller is closer to the hard permutation.
      mask: optional ``[..., n]`` bool/0-1, False = padding.

    Returns:
      ``[..., n, n]`` row-stochastic (and, up to the relaxation, column-stochastic) matrix
      P̂ with P̂[..., r − 1, j] ≈ [item j has rank r].
    """
    x, tau, valid, out_dtype = _prepare(scores, tau, mask)
    vf = tf.cast(valid, x.dtype)
    n_valid = tf.reduce_sum(vf, axis=-1, keepdims=True)
    # (A·1)_j = Σ_i |x_j − x_i| over valid i.
    a_sum = tf.reduce_sum(tf.abs(x[..., :, None] - x[..., None, :]) * vf[..., None, :], axis=-1)
    ranks = tf.range(1, tf.shape(x)[-1] + 1, dtype=x.dtype)
    coef = (n_valid + 1.0 - 2.0 * ranks)[..., :, None]  # [..., n, 1]
    logits = (coef * x[..., None, :] - a_sum[..., None, :]) / tau
    return _finish(logits, valid, out_dtype)


def soft_sort(scores, tau: float = 1.0, mask=None) -> tf.Tensor:
    """SoftSort relaxed permutation (rows = ranks, descending).

    Args:
      scores: float tensor ``[..., n]``.
      tau: temperature > 0.
      mask: optional ``[..., n]`` bool/0-1, False = padding.

    Returns:
      ``[..., n, n]`` row-stochastic matrix, rows = ranks.
    """
    x, tau, valid, out_dtype = _prepare(scores, tau, mask)
    lowest = tf.reduce_min(x, axis=-1, keepdims=True) - 1.0
    # Masked items are pushed below every valid one so the first n_v sorted values are valid.
    sorted_x = tf.math.top_k(tf.where(valid, x, lowest), k=tf.shape(x)[-1], sorted=True).values
    logits = -tf.abs(sorted_x[..., :, None] - x[..., None, :]) / tau
    return _finish(logits, valid, out_dtype)


def topq_membership(perm, q) -> tf.Tensor:
    """Soft membership of each item in the top q of a soft permutation (LCRON, eq. for P^q).

        P^q_j = Σ_{r ≤ q} P̂_{r,j} / stop_gradient(Σ_r P̂_{r,j})

    Args:
      perm: ``[..., n, n]`` soft permutation (rows = ranks).
      q: Python int in [1, n] or int tensor broadcastable to the batch shape.

    Returns:
      ``[..., n]`` membership in [0, 1].
    """
    perm = tf.convert_to_tensor(perm)
    if perm.shape.rank is not None and perm.shape.rank < 2:
        raise ValueError(f"perm must have rank >= 2 ([..., n, n]), got perm.shape={perm.shape}")
    n = perm.shape[-1]
    if isinstance(q, bool) or (isinstance(q, float)):
        raise TypeError(f"q must be an integer, got q={q!r}")
    if isinstance(q, int) and (q <= 0 or (n is not None and q > n)):
        raise ValueError(f"q must be in [1, n={n}], got q={q}")
    dtype = perm.dtype
    ranks = tf.range(1, tf.shape(perm)[-2] + 1)
    q_t = tf.cast(tf.convert_to_tensor(q), tf.int32)
    row_in = tf.cast(ranks <= q_t[..., None], dtype)  # [..., n] (broadcast over batch)
    top = tf.reduce_sum(perm * row_in[..., :, None], axis=-2)
    total = tf.stop_gradient(tf.reduce_sum(perm, axis=-2))
    return top / tf.maximum(total, tf.constant(1e-12, dtype))
