"""FS-RankNet: the full-stage pairwise baseline of LCRON (arXiv 2503.09492, section 5).

"Full stage": every stage is trained on the whole logged list, where an item from a later
stage beats every item of an earlier stage and within a stage the better rank wins — exactly
the order of the graded labels. For S stages (2 or 3):

    L = Σ_t RankNet(s_t; labels)     (pairwise logistic, normalised per pair count)
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.ranknet import ranknet_loss


@keras.utils.register_keras_serializable(package="tfcascade")
class FSRankNetLoss(CascadeLoss):
    """Σ over stages of the RankNet loss on the full list (terms ``ranknet_stage{t}``)."""

    def compute_terms(self, labels, scores, weights, gt):
        return {f"ranknet_stage{t}": ranknet_loss(labels, s, weights) for t, s in enumerate(scores)}
