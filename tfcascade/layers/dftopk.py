"""Keras layer over the DFTopK operator (arXiv 2510.11472)."""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.layers._base import OpLayer
from tfcascade.ops.dftopk import dftopk, dftopk_logits


@keras.utils.register_keras_serializable(package="tfcascade")
class DFTopK(OpLayer):
    """Soft top-k membership σ((x − θ)/τ), θ = (x_[k] + x_[k+1]) / 2, O(n) per list.

    Args:
      k: how many items the selection keeps (may be overridden per call).
      temperature: τ > 0.
      return_logits: return (x − θ)/τ instead of the sigmoid (for BCE-with-logits).

    Call args: ``scores [..., n]``, optional ``mask`` and ``k``.
    """

    # XLA is faster on CPU (bench/results/topk.md) but off by default: eager GradientTape
    # through the jit-compiled custom gradient crashed after tf.saved_model.save (TF 2.21), and
    # plain TF ops keep SavedModels loadable by any TF Serving build. Opt in with jit_compile=True.
    JIT_COMPILE_DEFAULT = False

    def __init__(self, k: int, temperature: float = 1.0, return_logits: bool = False, **kwargs):
        self.k = k
        self.temperature = temperature
        self.return_logits = return_logits
        super().__init__(**kwargs)

    def _op(self, scores, k, mask):
        fn = dftopk_logits if self.return_logits else dftopk
        return fn(scores, k, temperature=self.temperature, mask=mask)

    def call(self, scores, mask=None, k=None):
        return self._compiled(self._checked(scores), self.k if k is None else k, mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "temperature": self.temperature,
                "return_logits": self.return_logits}
