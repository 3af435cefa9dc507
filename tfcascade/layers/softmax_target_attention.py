"""Target attention as the LCRON reference DIN computes it (arXiv 2503.09492, ``models.py``).

For a candidate q and history entries h_j (mask m_j):

    e_j = w₂ · ReLU(W₁ [h_j ; q] + b₁) + b₂,        W₁ of width ``hidden`` (80 in the reference)
    a = softmax_j(e_j where m_j else −2³⁰ + 1),     r = Σ_j a_j · m_j · h_j.

Unlike DIN's activation unit (``TargetAttention``, arXiv 1706.06978) the weights are normalised
over the history. An empty history gives r = 0, as the reference's zero padding embeddings do.
W₁ [h ; q] is computed as W₁ʰ h + W₁ᵠ q, so the hidden layer costs B·(H + n)·hidden products
instead of B·n·H·hidden; its weights are one ``[2d, hidden]`` kernel, initialised as one layer.
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade._keras import build_sublayer, keras, no_output_mask
from tfcascade.layers.initialization import dense

MASKED_LOGIT = -(2.0**30) + 1  # the reference's padding logit


@keras.utils.register_keras_serializable(package="tfcascade")
class SoftmaxTargetAttention(keras.layers.Layer):
    """``call(targets [B, n, d], history [B, H, d], mask [B, H]) -> [B, n, d]``.

    Args:
      hidden: width of the scoring MLP's hidden layer.
      initialization: ``"reference"`` or ``"keras"`` (``tfcascade.layers.initialization``).
    """

    compute_mask = no_output_mask

    def __init__(self, hidden: int = 80, initialization: str = "reference", **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.initialization = initialization
        self.pair = dense(self.hidden, initialization, name="pair", dtype=self.dtype)
        self.out = dense(1, initialization, name="w", dtype=self.dtype)

    def build(self, input_shape):
        """Builds the scoring MLP from the targets' shape ``[B, n, d]`` (its input is [h ; q],
        2d wide), so that a reloaded layer has its weights before its first call."""
        dim = int(input_shape[-1])
        build_sublayer(self.pair, (None, 2 * dim))
        build_sublayer(self.out, (None, self.hidden))
        super().build(input_shape)

    def weights_of(self, targets, history, mask):
        """``[B, n, H]`` attention weights (each row sums to 1 over the real history entries)."""
        dim = tf.shape(history)[-1]
        kernel = self.pair.kernel
        from_history = tf.einsum("bhd,dk->bhk", history, kernel[:dim])
        from_target = tf.einsum("bnd,dk->bnk", targets, kernel[dim:]) + self.pair.bias
        hidden = tf.nn.relu(from_target[:, :, None, :] + from_history[:, None, :, :])
        logits = tf.squeeze(self.out(hidden), -1)
        logits = tf.where(mask[:, None, :] > 0, logits, tf.cast(MASKED_LOGIT, logits.dtype))
        return tf.nn.softmax(logits, axis=-1)

    def call(self, targets, history, mask):
        return tf.einsum("bnh,bhd->bnd", self.weights_of(targets, history, mask), history * mask[..., None])

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden, "initialization": self.initialization}
