"""DIN ranker (Zhou et al., KDD 2018, arXiv 1706.06978): target attention of each candidate
over the user's history, then an MLP.

For candidate c (q: its embeddings of the five fields a history entry records: video, author,
both categories, upload type) and history entries h_j (same tables, mask m_j), two forms:

- ``attention="softmax"`` (default; the LCRON reference DIN, arXiv 2503.09492)::

    a = softmax_j(w₂·ReLU(W₁ [h_j ; q] + b₁) + b₂),  W₁ 80 wide,   r_c = Σ_j a_j m_j h_j
    score_c = MLP([user ; r_c ; item_c])

- ``attention="activation_unit"`` (the DIN paper's unit, not normalised)::

    a_j = w·ReLU(A q + B h_j + C (q ⊙ h_j) + b),  16 wide,  r_c = Σ_j m_j a_j h_j
    score_c = MLP([user ; mean(history) ; r_c ; item_c])

MLP [128, 128, 32, 1]; ``user`` holds the user's features and the request's time, ``item_c``
all eight item features (``tfcascade.features``), the reference DIN's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings, broadcast_to_items, mlp
from tfcascade.layers.softmax_target_attention import SoftmaxTargetAttention
from tfcascade.layers.target_attention import TargetAttention
from tfcascade.models.stage import StageModel

ATTENTIONS = {"softmax": (SoftmaxTargetAttention, 80), "activation_unit": (TargetAttention, 16)}


@keras.utils.register_keras_serializable(package="tfcascade")
class DIN(StageModel):
    """Args (beyond ``StageModel``'s):
      hidden: the scoring MLP's hidden widths.
      attention: ``"softmax"`` (the reference DIN's) or ``"activation_unit"`` (the paper's).
      attention_hidden: width of the attention's hidden layer (None: 80 / 16 by ``attention``).

    Raises:
      ValueError: an unknown ``attention``.
    """

    kind = "din"

    def __init__(self, vocab_sizes, embedding_dim: int = 8, hidden: Sequence[int] = (128, 128, 32),
                 attention: str = "softmax", attention_hidden: int | None = None, **kwargs):
        super().__init__(vocab_sizes, embedding_dim, **kwargs)
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {tuple(ATTENTIONS)}, got attention={attention!r}")
        self.embeddings = FeatureEmbeddings(self.vocab_sizes, self.embedding_dim, self.initialization, name="embeddings")
        self.hidden = [int(u) for u in hidden]
        self.attention_kind, self.attention_hidden = attention, attention_hidden
        layer, default_width = ATTENTIONS[attention]
        self.attention = layer(int(attention_hidden or default_width), self.initialization, name="target_attention")
        self.scorer = mlp(self.hidden + [1], "scorer", self.initialization)

    def call(self, features, training=False):
        e = self.embeddings
        items = e.items(features)
        history, mask = e.history(features)
        attended = self.attention(e.targets(features), history, mask)
        user = e.user(features)
        if self.attention_kind == "activation_unit":
            user = tf.concat([user, e.pooled_history(features)], -1)
        x = tf.concat([broadcast_to_items(user, items), attended, items], -1)
        return tf.squeeze(self.scorer(x, training=training), -1)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden, "attention": self.attention_kind,
                "attention_hidden": self.attention_hidden}
