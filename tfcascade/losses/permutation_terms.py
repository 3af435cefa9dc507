"""The shared terms of the permutation losses (LCRON, ARF, ARF-v2), as the reference code builds them.

The reference implementation of LCRON (arXiv 2503.09492, kwai/LCRON ``deep_components/loss``)
sorts the graded labels with NeuralSort at τ = 1e-4. Items whose labels are equal form a
*tie block*: a block of ``size`` items with ``start`` better items before it occupies rows
``start … start + size − 1`` of the label permutation, and NeuralSort spreads each of those
rows evenly over the block, so

    L[r, j] = 1/size_j  for start_j ≤ r < start_j + size_j,   0 elsewhere.

The three-stage LCRON code thresholds that matrix at 0.001 (mass 1 instead of 1/size); the
two-stage LCRON code and ARF / ARF-v2 use it as it is (``LCRONLoss(block_labels=...)``). The losses only ever need how many of a block's rows fall in a range of ranks, so the matrix
is built here in closed form from the labels (exact for labels that differ by more than ~1e-3,
as graded labels do). Padding items (weight 0) belong to no block and sort after every valid item.

The stage permutations are masked as the reference masks them: rows at ranks beyond the
number of valid items and columns of padding items are zeroed (``masked_permutation``).
"""

from __future__ import annotations

import tensorflow as tf


def tie_blocks(labels: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per item, the first rank of its tie block and the block's size (0-based ranks).

    Args:
      labels: ``[B, n]`` graded labels.
      weights: ``[B, n]`` validity (> 0 = valid).

    Returns:
      ``(start, size)``, both ``[B, n]`` in the labels' dtype: ``start_j`` = number of valid
      items with a larger label, ``size_j`` = number of valid items with label equal to
      ``labels_j`` (0 for padding items).
    """
    valid = tf.cast(weights > 0, labels.dtype)
    other = valid[:, None, :]
    start = tf.reduce_sum(tf.cast(labels[:, None, :] > labels[:, :, None], labels.dtype) * other, axis=-1)
    size = tf.reduce_sum(tf.cast(tf.equal(labels[:, None, :], labels[:, :, None]), labels.dtype) * other, axis=-1)
    return start * valid, size * valid


def block_rows(start: tf.Tensor, size: tf.Tensor, lo, hi) -> tf.Tensor:
    """How many rows of each item's tie block lie in the ranks ``[lo, hi)`` (0-based).

    With the thresholded label permutation of LCRON this is Σ_{lo ≤ r < hi} L[r, j]; divide by
    ``size`` for the unthresholded one (ARF).
    """
    dtype = start.dtype
    lo = tf.cast(lo, dtype)
    hi = tf.cast(hi, dtype)
    return tf.maximum(tf.minimum(start + size, hi) - tf.maximum(start, lo), 0.0)


def label_permutation(labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """The unthresholded label permutation ``L [B, n, n]`` (rows = ranks, columns = items)."""
    start, size = tie_blocks(labels, weights)
    ranks = tf.range(tf.shape(labels)[-1], dtype=labels.dtype)[None, :, None]
    inside = tf.logical_and(ranks >= start[:, None, :], ranks < (start + size)[:, None, :])
    return tf.where(inside, 1.0 / tf.maximum(size, 1.0)[:, None, :], tf.zeros([], labels.dtype))


def masked_permutation(perm: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``perm`` with rows at ranks ≥ the number of valid items and padding columns zeroed."""
    valid = tf.cast(weights > 0, perm.dtype)
    n_valid = tf.reduce_sum(valid, axis=-1, keepdims=True)
    row_valid = tf.cast(tf.range(tf.shape(perm)[-1], dtype=perm.dtype)[None, :] < n_valid, perm.dtype)
    return perm * row_valid[:, :, None] * valid[:, None, :]


def rows_sum(perm: tf.Tensor, lo, hi) -> tf.Tensor:
    """Σ_{lo ≤ r < hi} perm[r, j] for every item j, ``[B, n]``."""
    ranks = tf.range(tf.shape(perm)[-2])
    inside = tf.cast(tf.logical_and(ranks >= lo, ranks < hi), perm.dtype)
    return tf.reduce_sum(perm * inside[None, :, None], axis=-2)


REFERENCE_EPS = 1e-6


def reference_log(x: tf.Tensor) -> tf.Tensor:
    """log(x + 1e-6), the reference's guard (it never clips)."""
    return tf.math.log(x + REFERENCE_EPS)


def top_and_bottom(perm: tf.Tensor, q, negatives: str = "bottom_rows") -> tuple[tf.Tensor, tf.Tensor]:
    """Soft top-q and outside-top-q memberships of a masked permutation ``[B, n, n]``.

    Both are normalised by the stop-gradient column sums (+1e-6):
    top_j = Σ_{r<q} P̂[r, j] / (sg(Σ_r P̂[r, j]) + 1e-6), bottom_j the same over r ≥ q. With
    ``negatives = "one_minus_top"`` the outside membership is ``1 − top`` (same value, other
    gradient: NeuralSort's column sums are not exactly 1).
    """
    total = tf.stop_gradient(tf.reduce_sum(perm, axis=-2)) + REFERENCE_EPS
    top = rows_sum(perm, 0, q) / total
    if negatives == "one_minus_top":
        return top, 1.0 - top
    return top, rows_sum(perm, q, tf.shape(perm)[-1]) / total
