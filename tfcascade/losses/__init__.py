"""Cascade losses: LCRON, the DFTopK and LapSum cascade losses and the published baselines.

``get(name, stages=2, **options)`` builds one by name; ``names()`` lists the names. Each is a
Keras layer ``loss(labels, stage_scores, mask=None) -> scalar`` (``CascadeLoss``) following
the reference code in value and gradient (docs: losses).
"""

from tfcascade.losses.arf import ARFLoss, ARFv2Loss
from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.bce import BCELoss
from tfcascade.losses.dftopk import DFTopKCascadeLoss
from tfcascade.losses.fs_lambdaloss import FSLambdaLoss
from tfcascade.losses.fs_ranknet import FSRankNetLoss
from tfcascade.losses.icc import ICCLoss
from tfcascade.losses.lapsum import LapSumCascadeLoss
from tfcascade.losses.lcron import LCRONLoss
from tfcascade.losses.rankflow import RankFlowLoss
from tfcascade.losses.registry import get, names
from tfcascade.losses.uncertainty import UncertaintyWeighting

__all__ = ["ARFLoss", "ARFv2Loss", "BCELoss", "CascadeLoss", "DFTopKCascadeLoss", "FSLambdaLoss",
           "FSRankNetLoss", "ICCLoss", "LCRONLoss", "LapSumCascadeLoss", "RankFlowLoss",
           "UncertaintyWeighting", "get", "names"]
