"""ARF and ARF-v2, the NeuralSort recall losses that LCRON (arXiv 2503.09492) compares with, as
its reference code computes them.

Per stage t, P̂_t = NeuralSort(s_t, τ = 200), masked (``label_permutation.masked_permutation``);
L is the unthresholded label permutation (a tie block of s items has mass 1/s in each of its
rows), u_j = Σ_{r<k} L[r, j], d_j = Σ_{r≥k} L[r, j]; m_t is the stage's support (default its
q_t: 30 / 20 for retrieval / ranking, 40 / 30 / 20 with pre-ranking); G = ``global_size`` (default
the whole list); c_tj = sg(Σ_r P̂_t[r, j]); means over list slots and the batch:

- ARF:    L_relax,t = mean_b 1[n_valid > m_t] · mean_j w_j·(−log((1/m_t)·Σ_{r<m_t} P̂_t[r, j] + 1e-6))·u_j
- ARF-v2: L_relax,t = mean_b 1[n_valid > m_t] · mean_j w_j·[−log(Σ_{r<m_t} P̂_t[r, j]/(c_tj + 1e-6) + 1e-6)·u_j
                                                     − log(Σ_{r≥m_t} P̂_t[r, j]/(c_tj + 1e-6) + 1e-6)·d_j]
- both:   L_global,t = mean_b 1[n_valid ≥ G] · (1/G)·Σ_{r<G} mean_j (−log(P̂_t[r, j] + 1e-6))·L[r, j]
          L_t = ½/w_t² · L_global,t + L_relax,t + log|w_t|,    L = Σ_t L_t

(one learned w_t per stage on the global term only, initialised to 1).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss, positive_ints
from tfcascade.losses.permutation_terms import (
    block_rows,
    label_permutation,
    masked_permutation,
    reference_log,
    rows_sum,
    tie_blocks,
    top_and_bottom,
)
from tfcascade.losses.uncertainty import UncertaintyWeighting
from tfcascade.ops._validate import check_positive
from tfcascade.ops.soft_permutation import neural_sort


class _ARFBase(CascadeLoss):
    """Args:
      temperature: τ of NeuralSort (the reference: 200).
      m: the support of the relaxed term, one int for every stage or a list per stage
        (default: the stage's q_t, as the reference).
      global_size: G, the ranks of the global term (default: the whole list).
    """

    def __init__(self, temperature: float = 200.0, m=None, global_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")
        if m is None:
            self.m = self.stage_qs
        else:
            self.m = positive_ints("m", [m] * self.stages if np.ndim(m) == 0 else m, self.stages)
        self.global_size = None if global_size is None else positive_ints("global_size", [global_size])[0]
        self.uwl = UncertaintyWeighting([f"global_stage{t}" for t in range(self.stages)], name="uwl")

    def relax(self, perm, m, up, down, weights):  # pragma: no cover
        raise NotImplementedError

    def compute_terms(self, labels, scores, weights, gt):
        n = tf.shape(labels)[-1]
        g = n if self.global_size is None else self.global_size  # G > n: no list is long enough
        start, size = tie_blocks(labels, weights)
        block = tf.maximum(size, 1.0)
        up = block_rows(start, size, 0, self.k) / block
        down = block_rows(start, size, self.k, n) / block
        target = label_permutation(labels, weights)
        n_valid = tf.reduce_sum(weights, axis=-1)
        full = tf.cast(n_valid >= tf.cast(g, weights.dtype), weights.dtype)
        in_global = tf.cast(tf.range(n) < g, weights.dtype)[None, :, None]
        terms = {}
        for t, (s, m) in enumerate(zip(scores, self.m)):
            perm = masked_permutation(neural_sort(s, self.temperature, mask=weights > 0), weights)
            long_enough = tf.cast(n_valid > m, weights.dtype)[:, None]
            terms[f"relax_stage{t}"] = tf.reduce_mean(long_enough * self.relax(perm, m, up, down, weights))
            per_rank = tf.reduce_mean(-reference_log(perm) * target * in_global, axis=-1)  # [B, n]
            per_list = tf.reduce_sum(per_rank, axis=-1) / tf.cast(g, weights.dtype)
            terms[f"global_stage{t}"] = tf.reduce_mean(per_list * full)
        return terms

    def combine(self, terms):
        return self.uwl({n: terms[n] for n in self.uwl.names},
                        [terms[f"relax_stage{t}"] for t in range(self.stages)])

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "m": list(self.m),
                "global_size": self.global_size}


@keras.utils.register_keras_serializable(package="tfcascade")
class ARFLoss(_ARFBase):
    def relax(self, perm, m, up, down, weights):
        return weights * -reference_log(rows_sum(perm, 0, m) / m) * up


@keras.utils.register_keras_serializable(package="tfcascade")
class ARFv2Loss(_ARFBase):
    def relax(self, perm, m, up, down, weights):
        top, bottom = top_and_bottom(perm, m)
        return weights * (-reference_log(top) * up - reference_log(bottom) * down)
