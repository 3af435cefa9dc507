"""The DFTopK cascade loss (Zhu et al., 2025, arXiv 2510.11472), as its reference code
(zhangzhen97/DFTOPK, ``torch/deep_components/loss/two_stage/topk_loss.py``, ``dftopkjoint``)
computes it.

The uncertainty-weighted shape of LCRON with the O(n) DFTopK operator: per stage the logits
z_t = (s_t − θ_t)/τ, θ_t = (s_[k] + s_[k+1])/2 (θ passes gradient to the two boundary items, as
the reference's ``kthvalue`` does), y = hard top-k (k = 10) of the graded labels:

    L_single,t = BCE-with-logits(z_t, y),   L_e2e = BCE(Π_t σ(z_t), y)   (PyTorch's BCELoss)
    L = Σ_t ½/w_t² · L_single,t + L_e2e + Σ_t log|w_t|

q = k in every term. τ = 1 by default (the reference code's default; its README's command
passes τ = 500). The reference has two stages only; three stages add the pre-ranking stage's
L_single and factor, as LCRON does.
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.soft_topk_cascade import SoftTopKCascadeLoss
from tfcascade.ops._validate import check_positive
from tfcascade.ops.dftopk import dftopk_logits


@keras.utils.register_keras_serializable(package="tfcascade")
class DFTopKCascadeLoss(SoftTopKCascadeLoss):
    """Args: temperature: τ > 0 of the DFTopK sigmoid."""

    returns_logits = True

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")

    def membership(self, scores, q, weights):
        return dftopk_logits(scores, q, temperature=self.temperature, mask=weights > 0)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
