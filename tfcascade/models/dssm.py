"""DSSM two-tower retrieval (Huang et al., CIKM 2013), the cascade's first stage.

    u = MLP_user([user features ; request time ; mean(history)]),
    v_i = MLP_item(item_i features ; upload time),
    score_i = ⟨u, v_i⟩,     towers [128, 64, 32] (the LCRON setup, arXiv 2503.09492, with its inputs).

The user vector is computed once per request, so scoring N candidates is one matrix product
(``user_vector`` / ``item_vectors`` expose the towers for serving and ANN retrieval).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings, mlp
from tfcascade.models.stage import StageModel


@keras.utils.register_keras_serializable(package="tfcascade")
class DSSM(StageModel):
    kind = "dssm"

    def __init__(self, vocab_sizes, embedding_dim: int = 8, towers: Sequence[int] = (128, 64, 32), **kwargs):
        super().__init__(vocab_sizes, embedding_dim, **kwargs)
        self.embeddings = FeatureEmbeddings(self.vocab_sizes, self.embedding_dim, self.initialization, name="embeddings")
        self.towers = [int(u) for u in towers]
        self.user_tower = mlp(self.towers, "user_tower", self.initialization)
        self.item_tower = mlp(self.towers, "item_tower", self.initialization)

    def user_vector(self, features, training=False) -> tf.Tensor:
        e = self.embeddings
        return self.user_tower(tf.concat([e.user(features), e.pooled_history(features)], -1), training=training)

    def item_vectors(self, features, training=False) -> tf.Tensor:
        return self.item_tower(self.embeddings.items(features), training=training)

    def call(self, features, training=False):
        return tf.einsum("bd,bnd->bn", self.user_vector(features, training), self.item_vectors(features, training))

    def get_config(self) -> dict:
        return {**super().get_config(), "towers": self.towers}
