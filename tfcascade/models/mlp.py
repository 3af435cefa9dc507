"""MLP pre-ranker: a point-wise scorer over user, pooled-history and item features.

    score_i = MLP([user ; mean(history) ; item_i]),   hidden [128, 64, 32] → 1

(the LCRON reference code's pre-ranking MLP, arXiv 2503.09492, with its inputs: user features
and request time, the history's five fields, the eight item features).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings, broadcast_to_items, mlp
from tfcascade.models.stage import StageModel


@keras.utils.register_keras_serializable(package="tfcascade")
class MLPPreranker(StageModel):
    kind = "mlp"

    def __init__(self, vocab_sizes, embedding_dim: int = 8, hidden: Sequence[int] = (128, 64, 32), **kwargs):
        super().__init__(vocab_sizes, embedding_dim, **kwargs)
        self.embeddings = FeatureEmbeddings(self.vocab_sizes, self.embedding_dim, self.initialization, name="embeddings")
        self.hidden = [int(u) for u in hidden]
        self.scorer = mlp(self.hidden + [1], "scorer", self.initialization)

    def call(self, features, training=False):
        e = self.embeddings
        items = e.items(features)
        user = tf.concat([e.user(features), e.pooled_history(features)], -1)
        x = tf.concat([broadcast_to_items(user, items), items], -1)
        return tf.squeeze(self.scorer(x, training=training), -1)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden}
