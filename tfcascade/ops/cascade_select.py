"""Hard cascade selection: each stage keeps its top-q of what the previous stage kept.

    S_0 = valid items,   S_t = top-q_t of S_{t−1} by stage t's scores,   CS_out = S_T

This is the inference path of a cascade (and the golden metric's CS_out, arXiv 2503.09492).
Ties are broken towards the lower index (``tf.math.top_k``'s rule); rows with fewer survivors
than q keep all of them.

Two implementations of the same selection:

- ``cascade_select`` takes every stage's scores on the whole list (metrics and losses, where
  every stage has scored every item anyway);
- ``survivor_cascade`` scores stage t only on the q_{t−1} items stage t−1 kept (inference: the
  expensive ranker runs on q items, not on n). Survivors are handed on in list order, so ties
  are broken exactly as ``cascade_select`` breaks them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf


def cascade_select(stage_scores: Sequence, qs: Sequence[int], mask=None):
    """Runs the hard cascade.

    Args:
      stage_scores: S tensors ``[B, n]``, earliest stage first.
      qs: S ints, how many items each stage keeps (non-increasing).
      mask: optional ``[B, n]`` validity (bool or 0/1).

    Returns:
      (``kept [B, n]`` bool of the final stage's survivors, ``indices [B, min(q_T, n)]`` of the
      final top-q_T in the last stage's order (best first; −1 where a row had fewer survivors),
      ``scores`` the last stage's scores of those, −inf where missing).
    """
    if len(stage_scores) != len(qs) or not qs:
        raise ValueError(f"need one q per stage: got {len(stage_scores)} stage scores and qs={list(qs)}")
    check_qs(qs)
    first = tf.convert_to_tensor(stage_scores[0])
    n = first.shape[-1]
    kept = tf.ones_like(first, tf.bool) if mask is None else tf.cast(mask, tf.bool)
    neg_inf = tf.constant(-float("inf"), tf.float32)
    for scores, q in zip(stage_scores, qs):
        s = tf.where(kept, tf.cast(scores, tf.float32), neg_inf)
        # Fewer candidates than q (possible when n is only known at run time): keep them all.
        q = min(int(q), n) if n is not None else tf.minimum(int(q), tf.shape(s)[-1])
        values, idx = tf.math.top_k(s, k=q)
        kept = tf.logical_and(kept, _scatter_hits(idx, values > neg_inf, tf.shape(s)))
    valid_top = values > neg_inf
    return kept, tf.where(valid_top, idx, -tf.ones_like(idx)), values


def check_qs(qs: Sequence[int]) -> tuple[int, ...]:
    """``qs`` as ints, checked positive and non-increasing (each stage keeps at most what the
    previous kept); raises ValueError naming them."""
    qs = tuple(int(q) for q in qs)
    if any(q <= 0 for q in qs) or any(a < b for a, b in zip(qs, qs[1:])):
        raise ValueError(f"qs must be positive and non-increasing, got qs={list(qs)}")
    return qs


def _scatter_hits(idx: tf.Tensor, valid: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """``[B, n]`` bool, True at ``idx [B, q]`` where ``valid``: O(B·q), no ``[B, q, n]`` one-hot."""
    rows = tf.broadcast_to(tf.range(tf.shape(idx)[0])[:, None], tf.shape(idx))
    where = tf.stack([tf.boolean_mask(rows, valid), tf.boolean_mask(idx, valid)], axis=-1)
    return tf.scatter_nd(where, tf.ones(tf.shape(where)[:1], tf.bool), shape)


def survivor_cascade(stage_fns: Sequence[Callable[[Mapping[str, tf.Tensor]], tf.Tensor]],
                     gather: Callable[[tf.Tensor], Mapping[str, tf.Tensor]],
                     first_values: tf.Tensor, first_positions: tf.Tensor,
                     qs: Sequence[int], k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The hard cascade after its first stage, each later stage scoring only the survivors.

        P_1 = the first stage's top-q_1 (given),   P_t = top-q_t of P_{t−1} by f_t(items(P_{t−1}))

    Args:
      stage_fns: the stages after the first, each ``features -> scores [B, m]`` for the m items
        ``gather`` returns (any m, including 0).
      gather: ``positions [B, m] -> features`` of those items, where position −1 is padding
        (its scores are ignored).
      first_values: ``[B, m_1]`` the first stage's scores of its kept items (−inf = none).
      first_positions: ``[B, m_1]`` their positions in the candidate list (any order).
      qs: how many items each later stage keeps (len(stage_fns) values, non-increasing).
      k: the number of items returned.

    Returns:
      (``positions [B, k]`` best first by the last stage, −1 where fewer than k survived;
      ``scores [B, k]`` the last stage's scores, −inf where missing). With no later stage the
      first stage's order and scores are returned.
    """
    if len(stage_fns) != len(qs):
        raise ValueError(f"need one q per later stage: got {len(stage_fns)} stages and qs={list(qs)}")
    if int(k) <= 0:
        raise ValueError(f"k must be > 0, got k={k}")
    neg_inf = tf.constant(-float("inf"), tf.float32)
    values = tf.cast(first_values, tf.float32)
    positions = tf.where(values > neg_inf, tf.cast(first_positions, tf.int64), tf.constant(-1, tf.int64))
    for fn, q in zip(stage_fns, qs):
        positions = _in_list_order(positions)
        scores = tf.where(positions >= 0, tf.cast(fn(gather(positions)), tf.float32), neg_inf)
        values, best = tf.math.top_k(scores, k=tf.minimum(int(q), tf.shape(scores)[-1]))
        positions = tf.where(values > neg_inf, tf.gather(positions, best, batch_dims=1),
                             tf.constant(-1, tf.int64))
    if not stage_fns:
        values, best = tf.math.top_k(values, k=tf.shape(values)[-1])
        positions = tf.gather(positions, best, batch_dims=1)
    values, positions = values[:, : int(k)], positions[:, : int(k)]
    pad = [[0, 0], [0, int(k) - tf.shape(positions)[1]]]
    return tf.pad(positions, pad, constant_values=-1), tf.pad(values, pad, constant_values=-float("inf"))


def _in_list_order(positions: tf.Tensor) -> tf.Tensor:
    """Sorts positions ascending with padding (−1) last, so ``top_k`` ties go to the lower position."""
    big = tf.constant(tf.int64.max, tf.int64)
    ordered = tf.sort(tf.where(positions >= 0, positions, big), axis=-1)
    return tf.where(ordered == big, tf.constant(-1, tf.int64), ordered)
