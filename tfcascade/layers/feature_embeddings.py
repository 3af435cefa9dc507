"""Feature embeddings shared by every stage model (one table per id vocabulary).

History ids share the tables of the item features they name (``features.HISTORY_TO_ITEM``).
Index 0 is padding / unknown (its row is trained like any other but history padding is
masked out of every pooling).
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import build_sublayer, keras
from tfcascade.layers.initialization import check_initialization, dense, embedding_initializer

# The item features the history records, in history order: a candidate's side of target attention.
TARGET_FEATURES = tuple(F.HISTORY_TO_ITEM[h] for h in F.HISTORY_FEATURES)


@keras.utils.register_keras_serializable(package="tfcascade")
class FeatureEmbeddings(keras.layers.Layer):
    """Args: vocab_sizes: feature → table size (vocabulary + 1); dim: embedding width;
    initialization: ``"reference"`` or ``"keras"`` (``tfcascade.layers.initialization``)."""

    def __init__(self, vocab_sizes: Mapping[str, int], dim: int = 8, initialization: str = "reference", **kwargs):
        super().__init__(**kwargs)
        missing = [f for f in F.USER_FEATURES + F.ITEM_FEATURES if f not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks {missing}")
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got dim={dim}")
        self.vocab_sizes = {f: int(vocab_sizes[f]) for f in F.USER_FEATURES + F.ITEM_FEATURES}
        self.dim = int(dim)
        self.initialization = check_initialization(initialization)
        self.tables = {
            f: keras.layers.Embedding(size, dim, embeddings_initializer=embedding_initializer(self.initialization),
                                      name=f"emb_{f}")
            for f, size in self.vocab_sizes.items()
        }

    def build(self, input_shape=None):
        """Creates every table (their shapes do not depend on the inputs), so that a reloaded
        layer has its weights before its first call."""
        for table in self.tables.values():
            build_sublayer(table, (None,))
        super().build(input_shape)

    def _lookup(self, name: str, ids) -> tf.Tensor:
        return self.tables[name](tf.cast(ids, tf.int32))

    def user(self, features) -> tf.Tensor:
        """``[B, 8·dim]``: the user's features and the request's time (``USER_FEATURES``)."""
        return tf.concat([self._lookup(f, features[f]) for f in F.USER_FEATURES], axis=-1)

    def items(self, features) -> tf.Tensor:
        """``[B, n, 8·dim]``: ids, categories, upload type and upload time (``ITEM_FEATURES``)."""
        return tf.concat([self._lookup(f, features[f]) for f in F.ITEM_FEATURES], axis=-1)

    def targets(self, features) -> tf.Tensor:
        """``[B, n, 5·dim]``: the candidate's embeddings of the fields its history records
        (``TARGET_FEATURES``), aligned with :meth:`history`."""
        return tf.concat([self._lookup(f, features[f]) for f in TARGET_FEATURES], axis=-1)

    def history(self, features) -> tuple[tf.Tensor, tf.Tensor]:
        """(``[B, H, 5·dim]`` history embeddings, ``[B, H]`` float mask of real entries)."""
        emb = tf.concat([self._lookup(F.HISTORY_TO_ITEM[h], features[h]) for h in F.HISTORY_FEATURES], axis=-1)
        return emb, tf.cast(tf.not_equal(features[F.HISTORY_FEATURES[0]], 0), emb.dtype)

    def pooled_history(self, features) -> tf.Tensor:
        """``[B, 5·dim]`` masked mean of the history."""
        emb, mask = self.history(features)
        return tf.math.divide_no_nan(tf.reduce_sum(emb * mask[..., None], 1),
                                     tf.reduce_sum(mask, 1, keepdims=True))

    def call(self, features):
        return self.user(features), self.items(features)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_sizes": dict(self.vocab_sizes), "dim": self.dim,
                "initialization": self.initialization}


def mlp(units, name: str, initialization: str = "reference", final_activation=None) -> keras.Sequential:
    """Dense stack with ReLU between layers and ``final_activation`` on the last, initialised
    under ``initialization``."""
    layers = [dense(u, initialization, activation="relu") for u in units[:-1]]
    layers.append(dense(units[-1], initialization, activation=final_activation))
    return keras.Sequential(layers, name=name)


def broadcast_to_items(user: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """``[B, d]`` → ``[B, n, d]`` matching ``items [B, n, ·]``."""
    return tf.broadcast_to(user[:, None, :], tf.concat([tf.shape(items)[:2], tf.shape(user)[-1:]], 0))
