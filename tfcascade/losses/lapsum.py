"""The DFTopK cascade-loss shape with the LapSum soft top-k (arXiv 2503.06242) as operator, as the
DFTopK reference code's ``lapsumjoint`` variant computes it.

m_t = LapSum(s_t, q, α) (Σ m = q exactly), α = 5 (the reference's); every BCE is
−[y log(m + 1e-6) + (1 − y) log(1 − m + 1e-6)]:

    L_single,t = BCE(m_t^{(k)}, y),   L_e2e = BCE(Π_t m_t^{(q_t)}, y),   uncertainty-weighted.

O(n log n) per list.
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.base import bce_on_probabilities_eps
from tfcascade.losses.soft_topk_cascade import SoftTopKCascadeLoss
from tfcascade.ops._validate import check_positive
from tfcascade.ops.lapsum import lapsum_topk


@keras.utils.register_keras_serializable(package="tfcascade")
class LapSumCascadeLoss(SoftTopKCascadeLoss):
    """Args: temperature: the Laplace scale α > 0 (default 5)."""

    def __init__(self, temperature: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")

    def membership(self, scores, q, weights):
        return lapsum_topk(scores, q, alpha=self.temperature, mask=weights > 0)

    def probability_bce(self, probs, targets, weights):
        return bce_on_probabilities_eps(probs, targets, weights)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
