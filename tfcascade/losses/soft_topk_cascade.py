"""The shared shape of the DFTopK cascade loss and its LapSum variant (LCRON's, whose terms it
reuses: LCRON's own terms are built from the permutation, ``lcron.py``).

For each stage t a differentiable top-q membership m_t ∈ [0, 1]^n. With y = 1 on CS_gt:

    L_single,t = BCE(m_t^{(k)}, y)                       (stage alone selects the k truths)
    L_e2e      = BCE(Π_t m_t^{(q_t)}, y)                  (survival through the whole cascade)
    L          = Σ_t ½/w_t² · L_single,t + L_e2e + Σ_t log|w_t|    (uncertainty weighting)

The product is a lower bound of a ground-truth item's probability of surviving every stage
(LCRON, Wang et al., ICML 2025, arXiv 2503.09492, eqs. for L_e2e and L_single). Every BCE is
a mean over the valid items (the DFTopK reference: over the list slots, the same without
padding), q = k in every term, as the DFTopK reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade.losses.base import (
    DEFAULT_STAGE_NAMES,
    CascadeLoss,
    bce_on_probabilities,
    bce_with_logits,
    positive_ints,
)
from tfcascade.losses.uncertainty import UncertaintyWeighting


class SoftTopKCascadeLoss(CascadeLoss):
    """Base: subclasses implement :meth:`membership` (probabilities or logits).

    Args:
      e2e_qs: the q of each stage inside L_e2e (default: k for every stage, as the LCRON
        reference code; the paper's (30, 20) gives lower joint recall there).
      single_q: the q inside L_single (default k).
    """

    returns_logits = False

    def __init__(self, stages: int = 2, k: int = 10, stage_qs=None, e2e_qs: Sequence[int] | None = None,
                 single_q: int | None = None, **kwargs):
        super().__init__(stages=stages, k=k, stage_qs=stage_qs, **kwargs)
        self.e2e_qs = positive_ints("e2e_qs", (self.k,) * stages if e2e_qs is None else e2e_qs, stages)
        (self.single_q,) = positive_ints("single_q", [self.k if single_q is None else single_q])
        self.names = DEFAULT_STAGE_NAMES[stages]
        self.uwl = UncertaintyWeighting([f"single_{n}" for n in self.names], name="uwl")

    def membership(self, scores: tf.Tensor, q: int, weights: tf.Tensor) -> tf.Tensor:  # pragma: no cover
        raise NotImplementedError

    def probability_bce(self, probs, targets, weights):
        """BCE on membership probabilities (PyTorch's ``BCELoss``, as the DFTopK reference)."""
        return bce_on_probabilities(probs, targets, weights)

    def _prob(self, scores, q, weights):
        m = self.membership(scores, q, weights)
        return tf.sigmoid(m) if self.returns_logits else m

    def compute_terms(self, labels, scores, weights, gt):
        terms = {}
        for name, s in zip(self.names, scores):
            m = self.membership(s, self.single_q, weights)
            terms[f"single_{name}"] = (bce_with_logits(m, gt, weights) if self.returns_logits
                                       else self.probability_bce(m, gt, weights))
        survival = tf.ones_like(gt)
        for s, q in zip(scores, self.e2e_qs):
            survival *= self._prob(s, q, weights)
        terms["e2e"] = self.probability_bce(survival, gt, weights)
        return terms

    def combine(self, terms):
        return self.uwl({n: terms[n] for n in self.uwl.names}, [terms["e2e"]])

    def get_config(self) -> dict:
        return {**super().get_config(), "e2e_qs": list(self.e2e_qs), "single_q": self.single_q}
