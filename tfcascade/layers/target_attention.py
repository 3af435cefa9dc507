"""DIN's target attention unit (Zhou et al., KDD 2018, arXiv 1706.06978).

For a candidate q and history entries h_j: a_j = w·ReLU(A q + B h_j + C (q ⊙ h_j) + b) and
r = Σ_j mask_j · a_j · h_j (no softmax, as in DIN).
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import build_sublayer, keras, no_output_mask
from tfcascade.layers.initialization import dense


@keras.utils.register_keras_serializable(package="tfcascade")
class TargetAttention(keras.layers.Layer):
    """DIN's activation unit; ``call(targets [B, n, d], history [B, H, d], mask [B, H]) -> [B, n, d]``."""

    compute_mask = no_output_mask

    def __init__(self, hidden: int = 16, initialization: str = "reference", **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.initialization = initialization
        self.q_proj = dense(self.hidden, initialization, name="q")
        self.h_proj = dense(self.hidden, initialization, use_bias=False, name="h")
        self.qh_proj = dense(self.hidden, initialization, use_bias=False, name="qh")
        self.out = dense(1, initialization, name="w")

    def build(self, input_shape):
        """Builds the projections from the targets' shape ``[B, n, d]`` (the history has the same
        d), so that a reloaded layer has its weights before its first call."""
        dim = int(input_shape[-1])
        for proj in (self.q_proj, self.h_proj, self.qh_proj):
            build_sublayer(proj, (None, dim))
        build_sublayer(self.out, (None, self.hidden))
        super().build(input_shape)

    def weights_of(self, targets, history, mask):
        """``[B, n, H]`` attention weights (0 on history padding)."""
        qh = targets[:, :, None, :] * history[:, None, :, :]
        act = tf.nn.relu(self.q_proj(targets)[:, :, None, :] + self.h_proj(history)[:, None, :, :] + self.qh_proj(qh))
        return tf.squeeze(self.out(act), -1) * mask[:, None, :]

    def call(self, targets, history, mask):
        return tf.einsum("bnh,bhd->bnd", self.weights_of(targets, history, mask), history)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden, "initialization": self.initialization}
