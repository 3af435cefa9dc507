"""DIN ranker (Zhou et al., KDD 2018): target attention of each candidate over the history.

For candidate c (video + author embedding q) and history entries h_j (same tables):

    a_j = w·ReLU(A q + B h_j + C (q ⊙ h_j) + b),   (DIN's activation unit on [q, h, q−h, q⊙h],
                                                    whose linear part folds into A, B, C)
    r_c = Σ_j mask_j · a_j · h_j                    (no softmax, as in DIN)
    score_c = MLP([user ; r_c ; item_c ; mean(history)]),  MLP [128, 128, 32, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings, broadcast_to_items, mlp
from tfcascade.layers.target_attention import TargetAttention
from tfcascade.models.stage import StageModel


@keras.utils.register_keras_serializable(package="tfcascade")
class DIN(StageModel):
    kind = "din"

    def __init__(self, vocab_sizes, embedding_dim: int = 8, hidden: Sequence[int] = (128, 128, 32),
                 attention_hidden: int = 16, **kwargs):
        super().__init__(vocab_sizes, embedding_dim, **kwargs)
        self.embeddings = FeatureEmbeddings(self.vocab_sizes, self.embedding_dim, name="embeddings")
        self.hidden = [int(u) for u in hidden]
        self.attention_hidden = int(attention_hidden)
        self.attention = TargetAttention(self.attention_hidden, name="target_attention")
        self.scorer = mlp(self.hidden + [1], "scorer")

    def call(self, features, training=False):
        e = self.embeddings
        items = e.items(features)
        history, mask = e.history(features)
        attended = self.attention(e.targets(features), history, mask)
        user = tf.concat([e.user(features), e.pooled_history(features)], -1)
        x = tf.concat([broadcast_to_items(user, items), attended, items], -1)
        return tf.squeeze(self.scorer(x, training=training), -1)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden, "attention_hidden": self.attention_hidden}
