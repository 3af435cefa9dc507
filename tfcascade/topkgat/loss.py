"""BPR loss (Rendle et al. 2009, arXiv 1205.2618) on final user/item vectors, with the layer-0
embedding penalty of the official TopKGAT code (arXiv 2601.18432)."""

from __future__ import annotations

import tensorflow as tf


def bpr_loss(user_x: tf.Tensor, item_x: tf.Tensor, users: tf.Tensor, items: tf.Tensor,
             negatives: tf.Tensor, reg: float = 0.0, user_embedding: tf.Tensor | None = None,
             item_embedding: tf.Tensor | None = None) -> tf.Tensor:
    """Mean softplus(s_uj − s_ui) + reg · ½ (mean‖e⁰_u‖² + mean‖e⁰_i‖² + mean‖e⁰_j‖²).

    Over all rows at once, with s_ui = x_u · x_i. The means over rows are accumulated in
    float64: XLA's CPU float32 reduction of 3·10⁵ terms near ln 2 (Food, first epochs) is off by
    2·10⁻⁴ of itself. The gradient (1/rows per term) is the same either way; the reported loss
    is not.

    Args:
      user_x, item_x: ``[U, d]`` / ``[I, d]`` final vectors (e.g. ``TopKGAT.propagate()``).
      users, items, negatives: ``int [rows]`` a user, its positive item, a sampled negative.
      reg: weight of the layer-0 penalty; needs ``user_embedding`` / ``item_embedding``
        (``[U, d]`` / ``[I, d]`` the layer-0 tables) when > 0.

    Returns:
      The scalar loss.
    """
    u = tf.gather(user_x, users)
    pos = tf.reduce_sum(u * tf.gather(item_x, items), axis=-1)
    neg = tf.reduce_sum(u * tf.gather(item_x, negatives), axis=-1)
    loss = _mean_over_rows(tf.nn.softplus(neg - pos))
    if reg:
        if user_embedding is None or item_embedding is None:
            raise ValueError(f"reg={reg!r} needs user_embedding and item_embedding (the layer-0 tables)")

        def mean_sq(table, ids):
            return _mean_over_rows(tf.reduce_sum(tf.square(tf.gather(table, ids)), axis=-1))

        penalty = (mean_sq(user_embedding, users) + mean_sq(item_embedding, items)
                   + mean_sq(item_embedding, negatives))
        loss = loss + reg * 0.5 * penalty
    return loss


def _mean_over_rows(values: tf.Tensor) -> tf.Tensor:
    """Mean of a ``[rows]`` tensor, accumulated in float64, in the dtype of ``values``."""
    return tf.cast(tf.reduce_mean(tf.cast(values, tf.float64)), values.dtype)
