"""ARF and ARF-v2 (NeuralSort-based recall-focused cascade losses, baselines of LCRON).

Per stage t (2 or 3 stages) with P̂ = NeuralSort(s_t, τ = 200) and m = k (option ``m``; ``m="stage"``
uses the stage's q_t — with q_t = 30 of 40 items the ARF-v2 "down" term asks 30 negatives to
leave a top-30 that has only 10 places outside it, and training on the tiny preset stalls):

- ARF:  L_relax = −mean_{j ∈ CS_gt} log( (1/m)·Σ_{r≤m} P̂_{r,j} ) — the mean of the top-m
  rows of P̂ (REFERENCES.md section 3), i.e. the soft probability that a true item lands in
  the stage's top m divided by m — and L_global = −mean_{r ≤ G} log P̂_{r, π(r)} against the
  label permutation π (G = ``global_size``, default k). Both per stage, combined with learned
  uncertainty weights (initialised to 1).
- ARF-v2: the relaxed membership is normalised by the stop-gradient column sums
  (P^m_j of LCRON) with an "up" term −log P^m_j on true items and a "down" term
  −log(1 − P^m_j) on the others (rows after m), uncertainty-weighted per stage.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import EPS, CascadeLoss, masked_mean
from tfcascade.losses.uncertainty import UncertaintyWeighting
from tfcascade.ops.soft_permutation import neural_sort, topq_membership


def _log(x):
    return tf.math.log(tf.clip_by_value(x, EPS, 1.0))


class _ARFBase(CascadeLoss):
    term_kinds: tuple[str, ...] = ()

    def __init__(self, temperature: float = 200.0, global_size: int | None = None, m: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.global_size = int(global_size or self.k)
        # m: the top rows the relaxed terms look at — k by default (as LCRON's reference code
        # uses q = k); m = q_t per stage is the alternative reading (``m="stage"``).
        self.m = m
        self.uwl = UncertaintyWeighting(
            [f"{kind}_stage{t}" for t in range(self.stages) for kind in self.term_kinds], name="uwl")

    def combine(self, terms):
        return self.uwl(terms)

    def stage_m(self) -> tuple[int, ...]:
        if self.m == "stage":
            return self.stage_qs
        return (int(self.m or self.k),) * self.stages

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "global_size": self.global_size,
                "m": self.m}


@keras.utils.register_keras_serializable(package="tfcascade")
class ARFLoss(_ARFBase):
    term_kinds = ("relax", "global")

    def compute_terms(self, labels, scores, weights, gt):
        valid = weights > 0
        order = tf.argsort(tf.where(valid, labels, tf.constant(-1e9, labels.dtype)), axis=-1, direction="DESCENDING", stable=True)
        n = labels.shape[-1]
        g = self.global_size if n is None else min(self.global_size, n)
        target = tf.one_hot(order[:, :g], tf.shape(labels)[-1], dtype=labels.dtype)  # [B, G, n]
        # Rank r exists only in rows with more than r valid items.
        n_valid = tf.reduce_sum(weights, axis=-1, keepdims=True)
        rank_valid = tf.cast(tf.range(g, dtype=labels.dtype)[None, :] < n_valid, labels.dtype)
        terms = {}
        for t, (s, m) in enumerate(zip(scores, self.stage_m())):
            perm = neural_sort(s, self.temperature, mask=valid)
            in_top = tf.reduce_mean(perm[:, :m, :], axis=1)
            terms[f"relax_stage{t}"] = masked_mean(-_log(in_top), gt)
            picked = tf.reduce_sum(perm[:, :g, :] * target, axis=-1)  # P̂_{r, π(r)}
            terms[f"global_stage{t}"] = masked_mean(-_log(picked), rank_valid)
        return terms


@keras.utils.register_keras_serializable(package="tfcascade")
class ARFv2Loss(_ARFBase):
    term_kinds = ("up", "down")

    def compute_terms(self, labels, scores, weights, gt):
        terms = {}
        for t, (s, m) in enumerate(zip(scores, self.stage_m())):
            member = topq_membership(neural_sort(s, self.temperature, mask=weights > 0), m)
            terms[f"up_stage{t}"] = masked_mean(-_log(member), gt)
            terms[f"down_stage{t}"] = masked_mean(-_log(1.0 - member), weights * (1.0 - gt))
        return terms
