"""FS-LambdaLoss: the full-stage listwise baseline of LCRON (arXiv 2503.09492, section 5), as its
reference code computes it.

Every stage is trained on the whole logged list with LambdaLoss (``lambdaloss``: gain = graded
label, discount 1/ln(1 + rank), topn = 30, smooth fraction 0.8, the ideal DCG over the whole
list — the reference scripts' settings, two and three stages). The reference takes the pairwise
BCE over every ordered (i, j), so each pair counts twice (w_ij = w_ji and BCE(s_j − s_i, 0) =
BCE(s_i − s_j, 1)); the batch loss is the mean over all lists:

    L = Σ_t mean_b 2·Σ_{y_i > y_j} w_ij · log(1 + e^{−(s_ti − s_tj)})
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.lambdaloss import check_options, lambdaloss


@keras.utils.register_keras_serializable(package="tfcascade")
class FSLambdaLoss(CascadeLoss):
    """Args:
      topn: the DCG cut-off of the pair discounts (default 30).
      smooth_fraction: share of LambdaRank's discount (default 0.8).
      idcg_topn: ranks of the ideal DCG (default None = the whole list; TF-Ranking uses topn).
    """

    def __init__(self, topn: int = 30, smooth_fraction: float = 0.8, idcg_topn: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.topn = int(topn)
        self.smooth_fraction = float(smooth_fraction)
        self.idcg_topn = None if idcg_topn is None else int(idcg_topn)
        check_options(self.topn, self.smooth_fraction, self.idcg_topn)

    def compute_terms(self, labels, scores, weights, gt):
        return {f"lambdaloss_stage{t}": 2.0 * tf.reduce_mean(
            lambdaloss(labels, s, weights, self.topn, self.smooth_fraction, self.idcg_topn))
            for t, s in enumerate(scores)}

    def get_config(self) -> dict:
        return {**super().get_config(), "topn": self.topn, "smooth_fraction": self.smooth_fraction,
                "idcg_topn": self.idcg_topn}
