"""Stage models (DSSM, MLP pre-ranker, DIN, TARQ) and the CascadeModel; TopKGAT."""

from tfcascade.models.cascade import CascadeModel, build_cascade
from tfcascade.models.din import DIN
from tfcascade.models.dssm import DSSM
from tfcascade.models.mlp import MLPPreranker

__all__ = ["DIN", "DSSM", "CascadeModel", "MLPPreranker", "build_cascade"]
