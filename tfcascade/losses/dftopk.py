"""The DFTopK cascade loss (Zhu et al., 2025, arXiv 2510.11472).

Same uncertainty-weighted shape as LCRON with the O(n) DFTopK operator: per stage the logits
z_t = (s_t − θ_t)/τ, θ_t = (s_[q] + s_[q+1])/2, L_single,t = BCE-with-logits(z_t^{(k)}, y) and
L_e2e = BCE(Π_t σ(z_t^{(q_t)}), y), y = hard top-k (k = 10) of the graded labels.
τ = 1 by default: the stage models' scores are unnormalised logits of order 1.
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.soft_topk_cascade import SoftTopKCascadeLoss
from tfcascade.ops.dftopk import dftopk_logits


@keras.utils.register_keras_serializable(package="tfcascade")
class DFTopKCascadeLoss(SoftTopKCascadeLoss):
    """Args: temperature: τ > 0 of the DFTopK sigmoid."""

    returns_logits = True

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def membership(self, scores, q, weights):
        return dftopk_logits(scores, q, temperature=self.temperature, mask=weights > 0)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
