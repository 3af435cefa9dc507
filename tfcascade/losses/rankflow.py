"""RankFlow (Qin et al., SIGIR 2022): stages trained on what the cascade passes on, as the LCRON
reference code (arXiv 2503.09492) computes it.

S_0 = the first stage's hard top q_0 (no gradient through the choice); S_t = stage t's top q_t
of S_{t−1}. With y = 1 on the ground truth:

    L = BCE(s_0, y) over all items
      + Σ_{t≥1} [ BCE(s_t, y) on S_{t−1} + α_d·MSE(sg(s_t), s_{t−1}) on S_{t−1}
                  − α_p·mean_b log σ(mean_{P_t} s_{t−1} − mean_{S_{t−1} \\ P_t} s_{t−1}) ]

P_t = stage t's top ``pairwise_top[t−1]`` items of S_{t−1}. Defaults (the reference's scripts):
two stages α_p = 0 (``pairwise_weight``), P = top 10; three stages α_p = 1, P = top 30, top 20;
α_d = 1 (``distill_weight``; the reference's two-stage α_p > 0 form uses α_d = 1 − α_p).
Means are over the items of each set (the reference: over its slots, the same without padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, bce_with_logits, masked_mean
from tfcascade.ops.cascade_select import cascade_select

DEFAULT_PAIRWISE_WEIGHT = {2: 0.0, 3: 1.0}
DEFAULT_PAIRWISE_TOP = {2: (10,), 3: (30, 20)}


@keras.utils.register_keras_serializable(package="tfcascade")
class RankFlowLoss(CascadeLoss):
    """Args:
      pairwise_weight: α_p (default 0 for two stages, 1 for three).
      distill_weight: α_d (default 1).
      pairwise_top: per later stage, the size of P_t (default (10,) / (30, 20)).
    """

    def __init__(self, pairwise_weight: float | None = None, distill_weight: float = 1.0,
                 pairwise_top: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pairwise_weight = float(DEFAULT_PAIRWISE_WEIGHT[self.stages] if pairwise_weight is None
                                     else pairwise_weight)
        self.distill_weight = float(distill_weight)
        self.pairwise_top = tuple(int(p) for p in (pairwise_top or DEFAULT_PAIRWISE_TOP[self.stages]))
        if len(self.pairwise_top) != self.stages - 1:
            raise ValueError(f"pairwise_top needs {self.stages - 1} values, got pairwise_top={pairwise_top!r}")
        for t, p in enumerate(self.pairwise_top):
            if not 0 < p < self.stage_qs[t]:
                raise ValueError(f"pairwise_top[{t}] must be in [1, stage_qs[{t}]), got pairwise_top={pairwise_top!r}")

    def compute_terms(self, labels, scores, weights, gt):
        valid = weights > 0
        fixed = [tf.stop_gradient(s) for s in scores]
        terms = {"bce_stage0": bce_with_logits(scores[0], gt, weights)}
        for t in range(1, len(scores)):
            passed, _, _ = cascade_select(fixed[:t], self.stage_qs[:t], valid)
            w = tf.cast(passed, weights.dtype)
            terms[f"bce_stage{t}"] = bce_with_logits(scores[t], gt, w)
            terms[f"distill_stage{t - 1}"] = self.distill_weight * masked_mean(
                tf.square(fixed[t] - scores[t - 1]), w)
            if self.pairwise_weight:
                top, _, _ = cascade_select(fixed[:t + 1], [*self.stage_qs[:t], self.pairwise_top[t - 1]], valid)
                top = tf.cast(top, weights.dtype)
                gap = (_row_mean(scores[t - 1], top) - _row_mean(scores[t - 1], w * (1.0 - top)))
                terms[f"pairwise_stage{t - 1}"] = -self.pairwise_weight * tf.reduce_mean(tf.math.log_sigmoid(gap))
        return terms

    def get_config(self) -> dict:
        return {**super().get_config(), "pairwise_weight": self.pairwise_weight,
                "distill_weight": self.distill_weight, "pairwise_top": list(self.pairwise_top)}


def _row_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights, axis=-1), tf.reduce_sum(weights, axis=-1))
