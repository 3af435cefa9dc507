"""TopKGAT (arXiv 2601.18432) and graph baselines: the model, full-ranking evaluation, negative
sampling, the BPR loss and the training loop, one concept per module."""

from tfcascade.topkgat.evaluator import DEFAULT_KS, FullRankingEvaluator
from tfcascade.topkgat.loss import bpr_loss
from tfcascade.topkgat.model import COMBINES, VARIANTS, TopKGAT, aggregate, band_pass, edge_weights
from tfcascade.topkgat.sampler import NegativeSampler
from tfcascade.topkgat.training import TrainConfig, TrainResult, make_train_step, train_topkgat

__all__ = ["COMBINES", "DEFAULT_KS", "VARIANTS", "FullRankingEvaluator", "NegativeSampler", "TopKGAT",
           "TrainConfig", "TrainResult", "aggregate", "band_pass", "bpr_loss", "edge_weights",
           "make_train_step", "train_topkgat"]
