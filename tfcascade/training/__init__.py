"""Training, evaluation and comparison of cascades (``TrainConfig``, ``train``, ``evaluate``, ``load_model``)."""

from tfcascade.training.compare import compare
from tfcascade.training.config import TrainConfig
from tfcascade.training.trainer import evaluate, evaluate_model, load_model, require_data, train

__all__ = ["TrainConfig", "compare", "evaluate", "evaluate_model", "load_model", "require_data", "train"]
