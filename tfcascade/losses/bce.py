"""Point-wise BCE per stage (the "BCE" baseline of LCRON, arXiv 2503.09492).

    L = Σ_t BCE(s_t, y) over the items that reached stage t in the logs,   y = 1 on CS_gt

An item "reached" stage t when its graded label is at least ``reached_labels[t]``
(``tfcascade.features.graded_label``: 8 = rerank_neg, 7 = rank_neg, 6 = coarse_neg, 5 =
prerank_neg, 0 = sampled negative). Defaults, as the LCRON reference code:

- two stages (retrieval, ranking): (0, 7) — retrieval on all 40 logged items, ranking on the
  20 rank_pos + rank_neg items;
- three stages (retrieval, pre-ranking, ranking): (0, 6, 8) — retrieval on all 50 items,
  pre-ranking on the 40 coarse_neg-and-later items, ranking on the 20 rerank_pos + rerank_neg
  ones.

Each term is a mean over the items it trains on (the reference: over their list slots, the
same number for lists without padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, bce_with_logits

DEFAULT_REACHED_LABELS = {2: (0.0, 7.0), 3: (0.0, 6.0, 8.0)}


@keras.utils.register_keras_serializable(package="tfcascade")
class BCELoss(CascadeLoss):
    """Args: reached_labels: per stage, the lowest graded label of the items it trains on."""

    def __init__(self, reached_labels: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        reached = DEFAULT_REACHED_LABELS[self.stages] if reached_labels is None else reached_labels
        self.reached_labels = tuple(float(r) for r in reached)
        if len(self.reached_labels) != self.stages:
            raise ValueError(f"reached_labels needs {self.stages} values, got reached_labels={reached_labels!r}")

    def compute_terms(self, labels, scores, weights, gt):
        terms = {}
        for t, (s, reached) in enumerate(zip(scores, self.reached_labels)):
            w = weights * tf.cast(labels >= reached, weights.dtype)
            terms[f"bce_stage{t}"] = bce_with_logits(s, gt, w)
        return terms

    def get_config(self) -> dict:
        return {**super().get_config(), "reached_labels": list(self.reached_labels)}
