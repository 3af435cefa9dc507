"""TARQ: pre-ranking with target attention approximated by residual quantization.

Li et al., "Equip Pre-ranking with Target Attention by Residual Quantization", 2025,
arXiv 2509.16931.

Target attention (TA, as in DIN) lets every candidate item attend over the user's behaviour
sequence: scoring N candidates costs O(N · H · d) for a history of length H. TARQ quantises the
item (target) representation t_i with residual quantization (RQ) into L codes
``c_1(i) … c_L(i)`` from codebooks ``E_l ∈ R^{C × d}``::

    r_1 = t_i,   c_l(i) = argmin_c ‖r_l − E_l[c]‖²,   r_{l+1} = r_l − E_l[c_l(i)],
    t_i ≈ Σ_l E_l[c_l(i)]

and lets the behaviour sequence attend to every codebook entry once per request::

    A_l[c] = Σ_h softmax_h( (W_q E_l[c]) · (W_k x_h) / √d ) · W_v x_h      (L · C queries, cacheable)

A candidate's interest vector is the sum of the attention outputs of its codes,
``a_i = Σ_l A_l[c_l(i)]`` — L lookups per candidate — and its score combines the user vector
u, a_i and t_i either as a vector product ``s = (u + a_i) · t_i`` (``scorer="dot"``) or with a
small MLP on ``[u, a_i, t_i, a_i ⊙ t_i]`` (``scorer="mlp"``). Per request the cost is
O(L·C·H·d) for the cache plus O(N·L·d) for the candidates, instead of O(N·H·d).

The codebooks are learned with the VQ-VAE objective per level (codebook term plus β-weighted
commitment, straight-through estimator for the quantised output), usage is tracked with an
exponential moving average, and dead codes (usage below a threshold) can be re-seeded from
recent residuals (``ResidualQuantizer.reset_dead_codes``) or the whole codebook refreshed by
residual k-means (``fit_kmeans``); during ``fit`` the :class:`CodebookMonitor` that
``TARQ.training_callbacks`` returns does both.

As a cascade stage, ``TARQ`` reads the feature dicts of ``tfcascade.features`` (user features
``[B]``, ``hist_video_id`` / ``hist_author_id`` ``[B, 50]``, item features ``[B, n]``, id 0 =
padding) and returns scores ``[B, n]``. History ids share the item embedding tables
(``HISTORY_TO_ITEM``), like DIN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.features import HISTORY_FEATURES, HISTORY_TO_ITEM, ITEM_FEATURES, USER_FEATURES
from tfcascade.layers.feature_embeddings import mlp
from tfcascade.layers.initialization import dense, embedding_initializer
from tfcascade.layers.residual_quantizer import CodebookMonitor, ResidualQuantizer
from tfcascade.models.stage import StageModel

SCORERS = ("dot", "mlp")


@keras.utils.register_keras_serializable(package="tfcascade")
class TARQ(StageModel):
    """TARQ pre-ranking stage: ``call(features, training=False) -> scores [B, n]``.

    Its training needs a :class:`CodebookMonitor` (:meth:`training_callbacks`) and it reports
    its codebook utilisation per level as ``tarq_utilisation`` (:meth:`training_metrics`).

    Args:
      vocab_sizes: vocabulary size (ids ``0 .. size-1``, 0 = padding) of every feature in
        ``USER_FEATURES`` and ``ITEM_FEATURES`` (history features use the item tables).
      embedding_dim: size of every feature embedding (8 in the LCRON setup).
      dim: size d of the item, history, user and attention vectors.
      num_levels, codebook_size: L and C of the residual quantizer.
      commitment: β of the commitment loss.
      scorer: ``"dot"`` (``(u + a_i) · t_i``) or ``"mlp"`` (MLP on ``[u, a_i, t_i, a_i ⊙ t_i]``).
      mlp_units: hidden sizes of the ``"mlp"`` scorer.
    """

    kind = "tarq"

    def __init__(self, vocab_sizes: dict, embedding_dim: int = 8, dim: int = 32,
                 num_levels: int = 3, codebook_size: int = 64, commitment: float = 0.25,
                 scorer: str = "mlp", mlp_units: tuple[int, ...] = (64, 32), **kwargs):
        missing = [f for f in USER_FEATURES + ITEM_FEATURES if f not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes is missing {missing}; got keys {sorted(vocab_sizes)}")
        bad = {k: v for k, v in vocab_sizes.items() if not isinstance(v, (int, np.integer)) or v < 2}
        if bad:
            raise ValueError(f"vocab_sizes must be integers >= 2 (0 is padding), got {bad}")
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got scorer={scorer!r}")
        super().__init__(vocab_sizes, embedding_dim, **kwargs)
        self.dim, self.scorer = int(dim), scorer
        self.num_levels, self.codebook_size, self.commitment = int(num_levels), int(codebook_size), float(commitment)
        self.mlp_units = tuple(int(u) for u in mlp_units)
        self.embeddings = {
            name: keras.layers.Embedding(self.vocab_sizes[name], self.embedding_dim, name=f"{name}_embedding",
                                         embeddings_initializer=embedding_initializer(self.initialization))
            for name in USER_FEATURES + ITEM_FEATURES}
        init = self.initialization
        self.item_tower = dense(self.dim, init, name="item_tower")
        self.history_tower = dense(self.dim, init, name="history_tower")
        self.user_tower = mlp([self.dim, self.dim], "user_tower", init)
        self.query = dense(self.dim, init, use_bias=False, name="query")
        self.key = dense(self.dim, init, use_bias=False, name="key")
        self.value = dense(self.dim, init, use_bias=False, name="value")
        self.quantizer = ResidualQuantizer(self.num_levels, self.codebook_size, self.commitment,
                                           name="quantizer")
        self.quantizer.build(tf.TensorShape([None, self.dim]))  # codebooks exist before any call
        if scorer == "mlp":
            self.head = mlp([*self.mlp_units, 1], "head", init)

    # -- the three parts, usable separately at serving time -------------------------------

    def item_vectors(self, features: dict) -> tf.Tensor:
        """t_i ``[..., d]`` from the item features (shape of ``video_id``)."""
        parts = [self.embeddings[name](features[name]) for name in ITEM_FEATURES]
        return self.item_tower(tf.concat(parts, axis=-1))

    def user_cache(self, features: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-request state: ``(u [B, d], A [B, L, C, d])`` — the user vector and the attention
        output of the behaviour sequence for every codebook entry (computed once per user)."""
        user = self.user_tower(tf.concat([self.embeddings[f](features[f]) for f in USER_FEATURES], -1))
        history = tf.concat([self.embeddings[HISTORY_TO_ITEM[f]](features[f]) for f in HISTORY_FEATURES], -1)
        history = self.history_tower(history)  # [B, H, d]
        valid = tf.not_equal(features[HISTORY_FEATURES[0]], 0)  # [B, H]
        codes = tf.reshape(self.quantizer.codebooks, [-1, self.dim])  # [L*C, d]
        attention = attend(self.query(codes), self.key(history), self.value(history), valid)
        return user, tf.reshape(attention, [-1, self.num_levels, self.codebook_size, self.dim])

    def score_codes(self, user: tf.Tensor, cache: tf.Tensor, items: tf.Tensor,
                    codes: tf.Tensor) -> tf.Tensor:
        """Scores ``[B, n]`` from the user cache, item vectors ``[B, n, d]`` and codes ``[B, n, L]``.

        a_i = Σ_l A[l, c_l(i)]: L gathers per candidate, no attention over the history.
        """
        interest = tf.add_n([tf.gather(cache[:, level], codes[..., level], batch_dims=1)
                             for level in range(self.num_levels)])  # [B, n, d]
        return self.combine(user, interest, items)

    def combine(self, user: tf.Tensor, interest: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """The score of ``(u [B, d], a_i [B, n, d], t_i [B, n, d])``."""
        user = tf.broadcast_to(user[:, None, :], tf.shape(items))
        if self.scorer == "dot":
            return tf.reduce_sum((user + interest) * items, axis=-1)
        return tf.squeeze(self.head(tf.concat([user, interest, items, interest * items], -1)), -1)

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        _check_features(features)
        items = self.item_vectors(features)  # [B, n, d]
        _, codes = self.quantizer(items, training=training)
        user, cache = self.user_cache(features)
        return self.score_codes(user, cache, items, tf.stop_gradient(codes))

    def training_callbacks(self, options: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
        """A :class:`CodebookMonitor` of the quantizer: residual k-means after the first batch,
        dead codes re-seeded every ``options["codebook_reset_every"]`` batches, seeded by
        ``options["seed"]``."""
        return [CodebookMonitor(self.quantizer, every=int(options["codebook_reset_every"]),
                                seed=int(options["seed"]))]

    def training_metrics(self) -> dict[str, Any]:
        """``tarq_utilisation``: the fraction of live codes of each codebook level."""
        return {"tarq_utilisation": [float(u) for u in self.quantizer.utilisation()]}

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "num_levels": self.num_levels,
                "codebook_size": self.codebook_size, "commitment": self.commitment, "scorer": self.scorer,
                "mlp_units": list(self.mlp_units)}



def _check_features(features) -> None:
    if not isinstance(features, dict):
        raise TypeError(f"features must be a dict of tensors (tfcascade.features), got {type(features).__name__}")
    missing = [f for f in USER_FEATURES + HISTORY_FEATURES + ITEM_FEATURES if f not in features]
    if missing:
        raise ValueError(f"features is missing {missing} (tfcascade.features layout); got keys {sorted(features)}")
    rank = features[ITEM_FEATURES[0]].shape.rank
    if rank is not None and rank != 2:
        raise ValueError(f"item features must be [B, n], got {ITEM_FEATURES[0]}.shape="
                         f"{features[ITEM_FEATURES[0]].shape}")


def attend(queries: tf.Tensor, keys: tf.Tensor, values: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Scaled dot-product attention of shared queries ``[Q, d]`` over each user's sequence.

    Args:
      queries: ``[Q, d]`` (the projected codebook entries, the same for every user).
      keys, values: ``[B, H, d]``.
      valid: ``bool [B, H]``; a user with no valid behaviour gets a zero output.

    Returns:
      ``[B, Q, d]``: ``softmax_h(q · k_h / √d) v_h`` over the valid positions.
    """
    logits = tf.einsum("qd,bhd->bqh", queries, keys) / tf.sqrt(tf.cast(tf.shape(keys)[-1], keys.dtype))
    logits = tf.where(valid[:, None, :], logits, tf.constant(-1e9, logits.dtype))
    weights = tf.nn.softmax(logits, axis=-1)
    has_any = tf.cast(tf.reduce_any(valid, axis=-1), values.dtype)[:, None, None]
    return tf.einsum("bqh,bhd->bqd", weights, values) * has_any
