"""TopKGAT (arXiv 2601.18432) and graph baselines: the model, full-ranking evaluation, negative
sampling, the BPR loss and the training loop, one concept per module (Keras 2: tf_keras)."""

from tfcascade._backend import require_tf_keras

require_tf_keras("tfcascade.topkgat")

from tfcascade.topkgat.evaluator import DEFAULT_KS, FullRankingEvaluator  # noqa: E402
from tfcascade.topkgat.loss import bpr_loss  # noqa: E402
from tfcascade.topkgat.model import COMBINES, VARIANTS, TopKGAT, aggregate, band_pass, edge_weights  # noqa: E402
from tfcascade.topkgat.sampler import NegativeSampler  # noqa: E402
from tfcascade.topkgat.training import (  # noqa: E402
    AdamW,
    EarlyStopping,
    TrainConfig,
    TrainResult,
    make_train_step,
    official_settings,
    train_topkgat,
)

__all__ = ["COMBINES", "DEFAULT_KS", "VARIANTS", "AdamW", "EarlyStopping", "FullRankingEvaluator",
           "NegativeSampler", "TopKGAT", "TrainConfig", "TrainResult", "aggregate", "band_pass",
           "bpr_loss", "edge_weights", "make_train_step", "official_settings", "train_topkgat"]
