"""Keras layers over the NeuralSort and SoftSort relaxed permutations."""

from __future__ import annotations

from tfcascade._keras import keras
from tfcascade.layers._base import OpLayer
from tfcascade.ops.soft_permutation import neural_sort, soft_sort


class _PermutationLayer(OpLayer):
    _fn = staticmethod(neural_sort)

    def __init__(self, tau: float = 1.0, **kwargs):
        self.tau = tau
        super().__init__(**kwargs)

    def _op(self, scores, mask):
        return type(self)._fn(scores, self.tau, mask=mask)

    def call(self, scores, mask=None):
        return self._compiled(self._checked(scores), mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "tau": self.tau}


@keras.utils.register_keras_serializable(package="tfcascade")
class NeuralSortPermutation(_PermutationLayer):
    """NeuralSort soft permutation ``[..., n, n]`` (rows = ranks) of ``scores [..., n]``."""

    _fn = staticmethod(neural_sort)


@keras.utils.register_keras_serializable(package="tfcascade")
class SoftSortPermutation(_PermutationLayer):
    """SoftSort soft permutation ``[..., n, n]`` (rows = ranks) of ``scores [..., n]``."""

    _fn = staticmethod(soft_sort)
