"""Full-stage pairwise / listwise baselines of the LCRON paper: FS-RankNet and FS-LambdaLoss.

"Full stage": every stage is trained on the whole logged list, where an item from a later
stage beats every item of an earlier stage (and within a stage the better rank wins) —
exactly the order of the graded labels.

- FS-RankNet: Σ_t RankNet(s_t) (pairwise logistic, normalised per pair count).
- FS-LambdaLoss: Σ_t LambdaLoss(s_t) with NDCG-Loss2 weights, gain = graded label,
  topn = 20, smooth fraction 1 (``pairwise.lambdaloss``).
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.pairwise import lambdaloss, ranknet_loss


@keras.utils.register_keras_serializable(package="tfcascade")
class FSRankNetLoss(CascadeLoss):
    def compute_terms(self, labels, scores, weights, gt):
        return {f"ranknet_stage{t}": ranknet_loss(labels, s, weights) for t, s in enumerate(scores)}


@keras.utils.register_keras_serializable(package="tfcascade")
class FSLambdaLoss(CascadeLoss):
    def __init__(self, topn: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.topn = int(topn)

    def compute_terms(self, labels, scores, weights, gt):
        return {f"lambdaloss_stage{t}": lambdaloss(labels, s, weights, self.topn) for t, s in enumerate(scores)}

    def get_config(self) -> dict:
        return {**super().get_config(), "topn": self.topn}
