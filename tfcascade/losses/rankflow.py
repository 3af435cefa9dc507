"""RankFlow (Qin et al., SIGIR 2022): stages trained on what the previous stage passes on.

    L = BCE(s_1, y) over all items
      + Σ_{t>1} [ BCE(s_t, y) on S_{t−1}   (the previous stage's hard top-q)
                + MSE(stop_grad(s_t), s_{t−1}) on S_{t−1}   (distillation downstream→upstream)
                + λ·pairwise ]

The optional pairwise term (``pairwise_weight`` λ, default 0) pushes the upstream stage's
mean logit of the downstream stage's top-k above its mean logit of the rest of S_{t−1}.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, bce_with_logits, masked_mean
from tfcascade.ops.cascade_select import cascade_select


@keras.utils.register_keras_serializable(package="tfcascade")
class RankFlowLoss(CascadeLoss):
    def __init__(self, pairwise_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.pairwise_weight = float(pairwise_weight)

    def compute_terms(self, labels, scores, weights, gt):
        terms = {"bce_stage0": bce_with_logits(scores[0], gt, weights)}
        for t in range(1, len(scores)):
            prev = tf.stop_gradient(scores[t - 1])
            passed, _, _ = cascade_select([prev], [self.stage_qs[t - 1]], weights > 0)
            w = tf.cast(passed, weights.dtype)
            terms[f"bce_stage{t}"] = bce_with_logits(scores[t], gt, w)
            terms[f"distill_stage{t - 1}"] = masked_mean(
                tf.square(tf.stop_gradient(scores[t]) - scores[t - 1]), w)
            if self.pairwise_weight:
                top, _, _ = cascade_select([tf.stop_gradient(scores[t])], [self.k], passed)
                top = tf.cast(top, weights.dtype)
                rest = w * (1.0 - top)
                gap = masked_mean(scores[t - 1], top) - masked_mean(scores[t - 1], rest)
                terms[f"pairwise_stage{t - 1}"] = self.pairwise_weight * tf.nn.softplus(-gap)
        return terms

    def get_config(self) -> dict:
        return {**super().get_config(), "pairwise_weight": self.pairwise_weight}
