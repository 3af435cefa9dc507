"""The base of every stage model: feature dicts in, one score per candidate out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tfcascade._keras import keras
from tfcascade.layers.initialization import check_initialization


class StageModel(keras.Model):
    """``call(features, training=False) -> scores [B, n]`` for any list length n.

    A subclass names its ``kind`` (what ``CascadeSpec.stage_kinds`` says to build it) and may
    bring what its training needs (:meth:`training_callbacks`) and reports
    (:meth:`training_metrics`), so that the trainer treats every stage alike.

    Args:
      vocab_sizes: feature → embedding table size.
      embedding_dim: width of every embedding (8 in the reference setup).
      initialization: how the weights start, ``"reference"`` (PyTorch's defaults, as the
        reference code) or ``"keras"`` (``tfcascade.layers.initialization``).
    """

    kind: ClassVar[str]

    def __init__(self, vocab_sizes: Mapping[str, int], embedding_dim: int = 8, initialization: str = "reference",
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = {feature: int(size) for feature, size in vocab_sizes.items()}
        self.embedding_dim = int(embedding_dim)
        self.initialization = check_initialization(initialization)

    def training_callbacks(self, options: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
        """Keras callbacks this stage needs during ``fit`` (default: none).

        Args:
          options: the run's training options (``training.TrainConfig.to_dict()``: ``seed``,
            ``codebook_reset_every``, …); a stage reads the ones it uses.

        Returns:
          The callbacks, new ones on every call.
        """
        return []

    def training_metrics(self) -> dict[str, Any]:
        """JSON values this stage reports once training ends (into ``metrics.json``; default: none)."""
        return {}

    def get_config(self) -> dict:
        return {"vocab_sizes": dict(self.vocab_sizes), "embedding_dim": self.embedding_dim,
                "initialization": self.initialization, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
