"""The base of every stage model: feature dicts in, one score per candidate out."""

from __future__ import annotations

from collections.abc import Mapping

from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings


class StageModel(keras.Model):
    """``call(features, training=False) -> scores [B, n]`` for any list length n.

    Args:
      vocab_sizes: feature → embedding table size.
      embedding_dim: width of every embedding (8 in the reference setup).
    """

    def __init__(self, vocab_sizes: Mapping[str, int], embedding_dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = dict(vocab_sizes)
        self.embedding_dim = int(embedding_dim)
        self.embeddings = FeatureEmbeddings(self.vocab_sizes, self.embedding_dim, name="embeddings")

    def get_config(self) -> dict:
        return {"vocab_sizes": self.vocab_sizes, "embedding_dim": self.embedding_dim, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
