"""LCRON (Wang et al., ICML 2025, arXiv 2503.09492), as its reference code computes it.

Per stage t the soft permutation P̂_t = NeuralSort(s_t, τ) (or SoftSort), masked (rows beyond the
valid items and padding columns zeroed), with stop-gradient column sums c_tj = sg(Σ_r P̂_t[r, j]):

    top_t(q)_j    = Σ_{r<q} P̂_t[r, j] / (c_tj + 1e-6)       (soft "inside the top q")
    bottom_t(q)_j = Σ_{r≥q} P̂_t[r, j] / (c_tj + 1e-6)       (soft "outside the top q")

Labels come from the label permutation (``permutation_terms``): u_j = Σ_{r<k} L[r, j] and
d_j = Σ_{r≥k} L[r, j]. The reference's two-stage code uses L as NeuralSort gives it (a tie block
of s items has mass 1/s per row, so d_j = 1 for a negative) and its three-stage code thresholds
it at 0.001 (mass 1 per row: a block of 10 equal negatives gives d_j = 10); ``block_labels``
"mean" / "count" chooses, default as the reference for the number of stages. With n the list length, B the batch and mean_j over the n list slots:

    L_single,t = mean_b 1[n_valid > k] · mean_j w_j [−log(top_t(k)_j + 1e-6)·u_j
                                                    − log(bottom_t(k)_j + 1e-6)·d_j]
    L_e2e      = mean_b mean_j w_j [−log(Π_t top_t(q_t)_j + 1e-6)·u_j
                                   − log(1 − Π_t (1 − bottom_t(q_t)_j) + 1e-6)·(1 − u_j)₊]
    L          = Σ_t ½/w_t² · L_single,t + L_e2e + Σ_t log|w_t|

q_t = k for every stage (``e2e_qs``; the reference code overrides its configured (30, 20) with
k). A negative is scored through the *bottom* rows: the forward value equals 1 − top_t, but the
gradient does not, because NeuralSort's column sums are not 1 and c is a constant. The paper's
form, −log(1 − top_t), is ``negatives="one_minus_top"``. τ = 50 (the reference's). O(n²) per list.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.permutation_terms import (
    block_rows,
    masked_permutation,
    reference_log,
    tie_blocks,
    top_and_bottom,
)
from tfcascade.losses.soft_topk_cascade import SoftTopKCascadeLoss
from tfcascade.ops._validate import check_positive
from tfcascade.ops.soft_permutation import neural_sort, soft_sort

SORTS = {"neural": neural_sort, "soft": soft_sort}
NEGATIVE_FORMS = ("bottom_rows", "one_minus_top")
BLOCK_LABELS = ("mean", "count")


@keras.utils.register_keras_serializable(package="tfcascade")
class LCRONLoss(SoftTopKCascadeLoss):
    """Args:
      temperature: τ of the soft sort (the reference: 50).
      sort: ``neural`` (default) or ``soft``.
      negatives: ``bottom_rows`` (the reference code, default) or ``one_minus_top`` (the paper).
      e2e_qs: q_t of each stage inside L_e2e (default k for every stage, as the reference).
      block_labels: ``mean`` (two-stage default) or ``count`` (three-stage default), see above.
    """

    def __init__(self, temperature: float = 50.0, sort: str = "neural", negatives: str = "bottom_rows",
                 e2e_qs: Sequence[int] | None = None, block_labels: str | None = None, **kwargs):
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {sorted(SORTS)}, got sort={sort!r}")
        if negatives not in NEGATIVE_FORMS:
            raise ValueError(f"negatives must be one of {NEGATIVE_FORMS}, got negatives={negatives!r}")
        super().__init__(e2e_qs=e2e_qs, **kwargs)
        self.temperature = check_positive(temperature, "temperature")
        self.sort = sort
        self.negatives = negatives
        self.block_labels = block_labels or ("mean" if self.stages == 2 else "count")
        if self.block_labels not in BLOCK_LABELS:
            raise ValueError(f"block_labels must be one of {BLOCK_LABELS}, got block_labels={block_labels!r}")

    def compute_terms(self, labels, scores, weights, gt):
        start, size = tie_blocks(labels, weights)
        up = block_rows(start, size, 0, self.k)
        down = block_rows(start, size, self.k, tf.shape(labels)[-1])
        if self.block_labels == "mean":
            up, down = up / tf.maximum(size, 1.0), down / tf.maximum(size, 1.0)
        n_valid = tf.reduce_sum(weights, axis=-1, keepdims=True)
        long_enough = tf.cast(n_valid > self.single_q, weights.dtype)
        terms = {}
        survive_top = tf.ones_like(weights)  # Π_t top_t(q_t)
        survive_bottom = tf.ones_like(weights)  # Π_t (1 − bottom_t(q_t))
        for name, s, q in zip(self.names, scores, self.e2e_qs):
            perm = masked_permutation(SORTS[self.sort](s, self.temperature, mask=weights > 0), weights)
            top, bottom = top_and_bottom(perm, self.single_q, self.negatives)
            per_item = weights * (-reference_log(top) * up - reference_log(bottom) * down)
            terms[f"single_{name}"] = tf.reduce_mean(per_item * long_enough)
            top, bottom = top_and_bottom(perm, q, self.negatives)
            survive_top *= top
            survive_bottom *= 1.0 - bottom
        negative = tf.maximum(1.0 - up, 0.0)
        terms["e2e"] = tf.reduce_mean(
            weights * (-reference_log(survive_top) * up - reference_log(1.0 - survive_bottom) * negative))
        return terms

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "sort": self.sort,
                "negatives": self.negatives, "block_labels": self.block_labels}
