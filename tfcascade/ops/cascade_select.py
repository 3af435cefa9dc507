"""Hard cascade selection: each stage keeps its top-q of what the previous stage kept.

    S_0 = valid items,   S_t = top-q_t of S_{t−1} by stage t's scores,   CS_out = S_T

This is the inference path of a cascade (and the golden metric's CS_out, REFERENCES.md §1).
Ties are broken towards the lower index (``tf.math.top_k``'s rule); rows with fewer survivors
than q keep all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    if any(int(q) <= 0 for q in qs) or any(a < b for a, b in zip(qs, qs[1:])):
        raise ValueError(f"qs must be positive and non-increasing, got qs={list(qs)}")
    first = tf.convert_to_tensor(stage_scores[0])
    n = first.shape[-1]
    kept = tf.ones_like(first, tf.bool) if mask is None else tf.cast(mask, tf.bool)
    neg_inf = tf.constant(-float("inf"), tf.float32)
    for scores, q in zip(stage_scores, qs):
        s = tf.where(kept, tf.cast(scores, tf.float32), neg_inf)
        # Fewer candidates than q (possible when n is only known at run time): keep them all.
        q = min(int(q), n) if n is not None else tf.minimum(int(q), tf.shape(s)[-1])
        values, idx = tf.math.top_k(s, k=q)
        hit = tf.reduce_sum(tf.one_hot(idx, tf.shape(s)[-1], dtype=tf.int32)
                            * tf.cast(values > neg_inf, tf.int32)[..., None], axis=-2) > 0
        kept = tf.logical_and(kept, hit)
    valid_top = values > neg_inf
    return kept, tf.where(valid_top, idx, -tf.ones_like(idx)), values
