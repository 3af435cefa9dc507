"""Keras layer over the LapSum soft top-k (arXiv 2503.06242)."""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.layers._base import OpLayer
from tfcascade.ops.lapsum import lapsum_topk


@keras.utils.register_keras_serializable(package="tfcascade")
class LapSumTopK(OpLayer):
    """Soft top-k p_i = F((x_i − b)/α) with Σ p = k exactly (Laplace CDF F).

    Args:
      k: how many items the selection keeps (may be overridden per call).
      alpha: Laplace scale α > 0.
    """

    JIT_COMPILE_DEFAULT = False

    def __init__(self, k: int, alpha: float = 1.0, **kwargs):
        self.k = k
        self.alpha = alpha
        super().__init__(**kwargs)

    def _op(self, scores, k, mask):
        return lapsum_topk(scores, k, alpha=self.alpha, mask=mask)

    def call(self, scores, mask=None, k=None):
        return self._compiled(self._checked(scores), self.k if k is None else k, mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "alpha": self.alpha}
