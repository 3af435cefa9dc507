"""LCRON (Wang et al., ICML 2025, arXiv 2503.09492): NeuralSort-based cascade loss.

Per stage the soft permutation P̂ = NeuralSort(s, τ) (or SoftSort) gives the top-q membership
P^q_j = Σ_{r≤q} P̂_{r,j} / stop_grad(Σ_r P̂_{r,j}); the loss is the uncertainty-weighted
L_single per stage plus L_e2e = BCE(Π_t P^{q_t}_t, y) (``soft_topk_cascade``). τ = 50 by
default (the paper's best; sweep 1…1000 in REFERENCES.md §4). O(n²) per list.
"""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.losses.soft_topk_cascade import SoftTopKCascadeLoss
from tfcascade.ops.soft_permutation import neural_sort, soft_sort, topq_membership

SORTS = {"neural": neural_sort, "soft": soft_sort}


@keras.utils.register_keras_serializable(package="tfcascade")
class LCRONLoss(SoftTopKCascadeLoss):
    """Args: temperature: τ of the soft sort; sort: ``neural`` (default) or ``soft``."""

    def __init__(self, temperature: float = 50.0, sort: str = "neural", **kwargs):
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {sorted(SORTS)}, got sort={sort!r}")
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.sort = sort

    def membership(self, scores, q, weights):
        perm = SORTS[self.sort](scores, self.temperature, mask=weights > 0)
        return topq_membership(perm, q)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "sort": self.sort}
