"""Thin, serialisable Keras layers: the differentiable top-K operators and the building blocks of
the stage models. They subclass the Keras this process uses (``tfcascade.keras_version()``):
tf_keras or Keras 3, from the same import."""

from tfcascade.layers.dftopk import DFTopK
from tfcascade.layers.feature_embeddings import FeatureEmbeddings
from tfcascade.layers.lapsum import LapSumTopK
from tfcascade.layers.residual_quantizer import ResidualQuantizer
from tfcascade.layers.soft_permutation import NeuralSortPermutation, SoftSortPermutation
from tfcascade.layers.softmax_target_attention import SoftmaxTargetAttention
from tfcascade.layers.target_attention import TargetAttention
from tfcascade.layers.tournament import TournamentTopK

__all__ = ["DFTopK", "FeatureEmbeddings", "LapSumTopK", "NeuralSortPermutation", "ResidualQuantizer",
           "SoftmaxTargetAttention", "SoftSortPermutation", "TargetAttention", "TournamentTopK"]
