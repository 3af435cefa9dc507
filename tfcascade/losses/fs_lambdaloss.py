"""FS-LambdaLoss: the full-stage listwise baseline of LCRON (arXiv 2503.09492, section 5).

Every stage is trained on the whole logged list with LambdaLoss (NDCG-Loss2 weights, gain =
graded label, discount 1/log2(rank + 1), topn = 20, smooth fraction 1; ``lambdaloss``):

    L = Σ_t LambdaLoss(s_t; labels)       (t over the 2 or 3 stages)
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.lambdaloss import lambdaloss


@keras.utils.register_keras_serializable(package="tfcascade")
class FSLambdaLoss(CascadeLoss):
    """Args: topn: the NDCG cut-off of the LambdaLoss weights (default 20)."""

    def __init__(self, topn: int = 20, **kwargs):
        super().__init__(**kwargs)
        if int(topn) <= 0:
            raise ValueError(f"topn must be a positive integer, got topn={topn!r}")
        self.topn = int(topn)

    def compute_terms(self, labels, scores, weights, gt):
        return {f"lambdaloss_stage{t}": lambdaloss(labels, s, weights, self.topn) for t, s in enumerate(scores)}

    def get_config(self) -> dict:
        return {**super().get_config(), "topn": self.topn}
