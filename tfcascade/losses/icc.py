"""ICC — joint optimisation of cascade ranking models (Gallagher et al., WSDM 2019), as the LCRON
reference code (arXiv 2503.09492) computes it.

Each stage's soft "inside my top q" indicator I_t = σ((s_t − κ_t)/σ), σ = 1e-3, with κ_t the
q_t-th largest valid score (it carries gradient, as the reference's gather does). The stages
form one ensemble score, each contributing where the cascade would let it decide:

    two stages:   e = (1 − I_0)·s_0 + I_0·I_1·s_1
    three stages: e = (1 − I_0)·s_0 + 2·I_0·(1 − I_1)·s_1 + 4·I_0·I_1·I_2·s_2

(``ensemble_weights`` (1, 1) / (1, 2, 4); κ's q = ``kappa_qs``, default (30, 30) / (40, 30, 30):
the last stage uses the previous stage's q, as the reference). The loss is the pairwise BCE of
e over the pairs (i, j) with i before j in the list ordered by label (ties: list order), target
[y_i > y_j] — equal labels push the later item up, as the reference's upper-triangular mask
does — averaged over the n² slots and the batch:

    L = mean_b (1/n²) Σ_{i before j} BCE(e_i − e_j, [y_i > y_j])
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, positive_ints
from tfcascade.ops._validate import check_positive

DEFAULT_ENSEMBLE_WEIGHTS = {2: (1.0, 1.0), 3: (1.0, 2.0, 4.0)}


def kth_largest(scores: tf.Tensor, q: int, weights: tf.Tensor) -> tf.Tensor:
    """The q-th largest valid score per row, ``[B, 1]``, with gradient (−1e9 if too few)."""
    s = tf.where(weights > 0, scores, tf.constant(-1e9, scores.dtype))
    q = min(q, scores.shape[-1]) if scores.shape[-1] is not None else q
    return tf.math.top_k(s, k=q).values[:, q - 1:q]


def label_order_before(labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``[B, n, n]`` 1 where item i comes before item j (both valid) in the list sorted by
    label, descending, ties in list order."""
    n = tf.shape(labels)[-1]
    index = tf.range(n)
    earlier = index[:, None] < index[None, :]
    higher = labels[:, :, None] > labels[:, None, :]
    tied = tf.equal(labels[:, :, None], labels[:, None, :])
    valid = weights > 0
    both = tf.logical_and(valid[:, :, None], valid[:, None, :])
    return tf.cast(both & (higher | (tied & earlier[None])), labels.dtype)


@keras.utils.register_keras_serializable(package="tfcascade")
class ICCLoss(CascadeLoss):
    """Args:
      width: σ of the indicators (1e-3).
      kappa_qs: the q of each stage's κ (default the reference's).
      ensemble_weights: the coefficient of each stage in e (default the reference's).
    """

    def __init__(self, width: float = 1e-3, kappa_qs: Sequence[int] | None = None,
                 ensemble_weights: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.width = check_positive(width, "width")
        default_qs = self.stage_qs[:-1] + self.stage_qs[-2:-1]
        self.kappa_qs = positive_ints("kappa_qs", default_qs if kappa_qs is None else kappa_qs, self.stages)
        self.ensemble_weights = tuple(float(c) for c in (
            DEFAULT_ENSEMBLE_WEIGHTS[self.stages] if ensemble_weights is None else ensemble_weights))
        if len(self.ensemble_weights) != self.stages:
            raise ValueError(f"ensemble_weights needs {self.stages} values, "
                             f"got ensemble_weights={list(self.ensemble_weights)}")

    def compute_terms(self, labels, scores, weights, gt):
        ensemble = tf.zeros_like(scores[0])
        survive = tf.ones_like(scores[0])
        last = len(scores) - 1
        for t, (s, q, c) in enumerate(zip(scores, self.kappa_qs, self.ensemble_weights)):
            inside = tf.sigmoid((s - kth_largest(s, q, weights)) / self.width)
            share = inside if t == last else 1.0 - inside
            ensemble += c * survive * share * s
            survive *= inside
        before = label_order_before(labels, weights)
        target = tf.cast(labels[:, :, None] > labels[:, None, :], labels.dtype)
        diff = ensemble[:, :, None] - ensemble[:, None, :]
        pair_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=diff)
        return {"icc_pairwise": tf.reduce_mean(tf.reduce_mean(pair_bce * before, axis=[1, 2]))}

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width, "kappa_qs": list(self.kappa_qs),
                "ensemble_weights": list(self.ensemble_weights)}
