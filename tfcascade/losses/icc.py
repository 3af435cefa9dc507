"""ICC — joint optimisation of cascade ranking models (Gallagher et al., WSDM 2019).

The stages form one ensemble score: each earlier stage contributes a soft indicator of
"inside my top-q_t", I_t = σ((s_t − θ_t)/w) with θ_t the q_t-th largest score (no gradient)
and width w = 1e-3; the ensemble e = σ(s_T)·Π_{t<T} I_t is trained with a pairwise logistic
(RankNet) loss against the graded labels.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.ranknet import ranknet_loss


def kth_largest_nograd(scores: tf.Tensor, q: int, weights: tf.Tensor) -> tf.Tensor:
    """The q-th largest valid score per row, ``[B, 1]``, without gradient."""
    s = tf.where(weights > 0, tf.stop_gradient(scores), tf.constant(-1e9, scores.dtype))
    q = min(q, scores.shape[-1]) if scores.shape[-1] is not None else q
    return tf.reduce_min(tf.math.top_k(s, k=q).values, axis=-1, keepdims=True)


@keras.utils.register_keras_serializable(package="tfcascade")
class ICCLoss(CascadeLoss):
    def __init__(self, width: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.width = float(width)

    def compute_terms(self, labels, scores, weights, gt):
        ensemble = tf.sigmoid(scores[-1])
        for s, q in zip(scores[:-1], self.stage_qs[:-1]):
            ensemble *= tf.sigmoid((s - kth_largest_nograd(s, q, weights)) / self.width)
        # The pairwise loss needs logits: log of the ensemble probability keeps its order.
        return {"icc_pairwise": ranknet_loss(labels, tf.math.log(ensemble + 1e-12), weights)}

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width}
