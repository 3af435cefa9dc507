"""Point-wise BCE per stage (the LCRON paper's "BCE" baseline).

    L = Σ_t BCE(s_t, y) over stage t's training items,   y = 1 on CS_gt.

The last stage trains on the items that reached the ranking stage (graded label ≥
``reached_label`` = 7: rank_neg and above — the 20 rank_pos + rank_neg items of a two-stage
list); earlier stages on every valid item.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, bce_with_logits


@keras.utils.register_keras_serializable(package="tfcascade")
class BCELoss(CascadeLoss):
    def __init__(self, reached_label: float = 7.0, **kwargs):
        super().__init__(**kwargs)
        self.reached_label = float(reached_label)

    def compute_terms(self, labels, scores, weights, gt):
        terms = {}
        for t, s in enumerate(scores):
            w = weights
            if t == len(scores) - 1:
                w = weights * tf.cast(labels >= self.reached_label, weights.dtype)
            terms[f"bce_stage{t}"] = bce_with_logits(s, gt, w)
        return terms

    def get_config(self) -> dict:
        return {**super().get_config(), "reached_label": self.reached_label}
