"""Thin, serialisable Keras layers over the differentiable top-K operators."""

from tfcascade.layers.dftopk import DFTopK
from tfcascade.layers.lapsum import LapSumTopK
from tfcascade.layers.soft_permutation import NeuralSortPermutation, SoftSortPermutation
from tfcascade.layers.tournament import TournamentTopK

__all__ = ["DFTopK", "LapSumTopK", "NeuralSortPermutation", "SoftSortPermutation", "TournamentTopK"]
