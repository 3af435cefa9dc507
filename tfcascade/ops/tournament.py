"""Successive-halving (tournament) differentiable top-k of vectors.

Pietruszka et al., "Successive Halving Top-k Operator", AAAI 2021 (arXiv 2010.15552).
Each round sorts the candidates by score (a non-differentiable permutation), pairs the i-th
best with the i-th worst and replaces every pair by a boosted softmax mix

    w = softmax(C·v_i, C·v_j),  E' = w_0·E_i + w_1·E_j,  v' = w_0·v_i + w_1·v_j,

halving the list until k rows remain. Any n and k work: a round over an odd length pads one
row whose score is far below every real score (it always loses, its weight is exactly 0),
and the last round, when k < L < 2k, keeps the best 2k − L rows and merges only the other
2(L − k) rows pairwise, so exactly k rows come out. The boost C multiplies raw scores:
for scores with a spread of s, the mix is close to hard once C·s ≳ 10 (the reference default
is C = 20 for scores of order 1).

Also here: the iterative-softmax baseline (Goyal et al., 2018) and the normalised Chamfer
cosine similarity (nCCS) used to score approximate selections.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from tfcascade.ops._common import as_dtype
from tfcascade.ops._validate import check_positive, check_scores


def _check(embeddings, scores, k):
    v, out_dtype = check_scores(scores)
    e = tf.convert_to_tensor(embeddings)
    if not e.dtype.is_floating:
        raise TypeError(f"embeddings must be a floating tensor, got embeddings.dtype={e.dtype.name}")
    if e.shape.rank is not None and e.shape.rank != v.shape.rank + 1:
        raise ValueError(
            f"embeddings must be [..., n, d] for scores [..., n]; got embeddings.shape={e.shape}, "
            f"scores.shape={v.shape}")
    if e.shape.rank is not None and not e.shape[:-1].is_compatible_with(v.shape):
        raise ValueError(f"embeddings.shape={e.shape} does not match scores.shape={v.shape}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be a Python integer, got k={k!r}")
    n = v.shape[-1]
    if n is None:
        raise ValueError("scores must have a static list length n")
    if k <= 0 or k > n:
        raise ValueError(f"k must be in [1, n={n}], got k={k}")
    return tf.cast(e, v.dtype), v, out_dtype, int(k), int(n)


def _sort_desc(e, v):
    order = tf.argsort(tf.stop_gradient(v), axis=-1, direction="DESCENDING", stable=True)
    bd = len(v.shape) - 1
    return tf.gather(e, order, batch_dims=bd), tf.gather(v, order, batch_dims=bd)


def _merge(e_hi, v_hi, e_lo, v_lo, boost):
    """Boosted softmax mix of paired rows (hi = better score)."""
    logits = tf.stack([boost * v_hi, boost * v_lo], axis=-1)
    w = tf.nn.softmax(logits - tf.stop_gradient(tf.reduce_max(logits, -1, keepdims=True)), axis=-1)
    w0, w1 = w[..., 0], w[..., 1]
    return w0[..., None] * e_hi + w1[..., None] * e_lo, w0 * v_hi + w1 * v_lo


def tournament_topk(embeddings, scores, k: int, boost: float = 20.0):
    """Selects k of n vectors by successive halving.

    Args:
      embeddings: ``[..., n, d]`` float tensor.
      scores: ``[..., n]`` float tensor (−inf allowed: such rows always lose).
      k: Python int in [1, n].
      boost: C > 0, the softmax sharpness of each pairwise mix.

    Returns:
      (``[..., k, d]`` mixed embeddings, ``[..., k]`` mixed scores), best first.
    """
    e, v, out_dtype, k, n = _check(embeddings, scores, k)
    boost = as_dtype(check_positive(boost, "boost"), v.dtype)
    finite = tf.math.is_finite(v)
    floor = tf.reduce_min(tf.where(finite, v, tf.zeros_like(v)), axis=-1, keepdims=True)
    span = tf.reduce_max(tf.where(finite, v, tf.zeros_like(v)), axis=-1, keepdims=True) - floor
    # A score that always loses with weight exactly 0, yet keeps every product finite.
    loser = floor - (span + 1.0) * 1e4 - 1e4 / boost
    v = tf.where(finite, v, tf.where(v > 0, floor + span + 1.0, loser))
    length = n
    while length > k:
        e, v = _sort_desc(e, v)
        if length >= 2 * k:
            if length % 2:
                e = tf.concat([e, tf.zeros_like(e[..., :1, :])], axis=-2)
                v = tf.concat([v, tf.broadcast_to(loser, tf.shape(v[..., :1]))], axis=-1)
                length += 1
            half = length // 2
            e, v = _merge(e[..., :half, :], v[..., :half], tf.reverse(e[..., half:, :], [-2]),
                          tf.reverse(v[..., half:], [-1]), boost)
            length = half
        else:
            keep = 2 * k - length
            pairs = length - k
            rest_e, rest_v = e[..., keep:, :], v[..., keep:]
            me, mv = _merge(rest_e[..., :pairs, :], rest_v[..., :pairs],
                            tf.reverse(rest_e[..., pairs:, :], [-2]), tf.reverse(rest_v[..., pairs:], [-1]), boost)
            e = tf.concat([e[..., :keep, :], me], axis=-2)
            v = tf.concat([v[..., :keep], mv], axis=-1)
            length = k
    e, v = _sort_desc(e, v)
    return tf.cast(e, out_dtype), tf.cast(v, out_dtype)


def iterative_softmax_topk(embeddings, scores, k: int, boost: float = 20.0):
    """Goyal et al. (2018) baseline: k peaked softmaxes, each masking the current maximum.

    Step t: w = softmax(−C·(v − max v)²) over the remaining rows, output Σ w·E and Σ w·v,
    then the arg-max row is removed. O(k·n).
    """
    e, v, out_dtype, k, _ = _check(embeddings, scores, k)
    boost = as_dtype(check_positive(boost, "boost"), v.dtype)
    removed = tf.zeros_like(v, dtype=tf.bool)
    outs_e, outs_v = [], []
    for _ in range(k):
        live = tf.where(removed, tf.fill(tf.shape(v), v.dtype.min), v)
        top = tf.reduce_max(live, axis=-1, keepdims=True)
        logits = tf.where(removed, tf.fill(tf.shape(v), -1e30), -boost * tf.square(v - top))
        w = tf.nn.softmax(logits, axis=-1)
        outs_e.append(tf.reduce_sum(w[..., None] * e, axis=-2))
        outs_v.append(tf.reduce_sum(w * v, axis=-1))
        removed = removed | tf.one_hot(tf.argmax(live, axis=-1), tf.shape(v)[-1], on_value=True, off_value=False)
    return tf.cast(tf.stack(outs_e, axis=-2), out_dtype), tf.cast(tf.stack(outs_v, axis=-1), out_dtype)


def ncc_similarity(selected, embeddings, scores, k: int) -> tf.Tensor:
    """Normalised Chamfer cosine similarity (nCCS) of a selection to the true top-k rows.

    nCCS = mean over selected rows of max over true top-k rows of cos(selected, true);
    1.0 means every selected row points exactly at one of the true top-k embeddings.

    Returns:
      ``[...]`` per-list similarity.
    """
    selected = tf.convert_to_tensor(selected)
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), selected.dtype)
    idx = tf.math.top_k(tf.cast(scores, selected.dtype), k=k).indices
    true = tf.gather(embeddings, idx, batch_dims=len(idx.shape) - 1)
    a = tf.math.l2_normalize(selected, axis=-1)
    b = tf.math.l2_normalize(true, axis=-1)
    cos = tf.matmul(a, b, transpose_b=True)
    return tf.reduce_mean(tf.reduce_max(cos, axis=-1), axis=-1)
