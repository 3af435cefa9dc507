"""Keras layer over the successive-halving top-k of vectors (arXiv 2010.15552)."""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.layers._base import OpLayer
from tfcascade.ops.tournament import tournament_topk


@keras.utils.register_keras_serializable(package="tfcascade")
class TournamentTopK(OpLayer):
    """Selects k of n vectors by score with boosted pairwise softmax mixes.

    Args:
      k: rows to return.
      boost: C > 0, sharpness of each pairwise mix.

    Call args: ``(embeddings [..., n, d], scores [..., n])``; returns the ``(k×d, k)`` pair.
    """

    JIT_COMPILE_DEFAULT = False

    def __init__(self, k: int, boost: float = 20.0, **kwargs):
        self.k = k
        self.boost = boost
        super().__init__(**kwargs)

    def _op(self, embeddings, scores):
        return tournament_topk(embeddings, scores, self.k, boost=self.boost)

    def call(self, embeddings, scores):
        return self._compiled(embeddings, self._checked(scores))

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "boost": self.boost}
