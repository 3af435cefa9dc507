"""TopKGAT: graph attention whose layer is a gradient-ascent step of smoothed Precision@K.

Chen et al., "TopKGAT: A Top-K Objective-Driven Architecture for Recommendation", WWW 2026,
arXiv 2601.18432. On the user–item bipartite graph built from the
training pairs (duplicates kept), layer ``l`` replaces every node by a weighted neighbour sum::

    w_ui     = ω(z_u · z_i − β_u^(l)) / √(d_u · d_i)      z = row-wise L2-normalised x^(l)
    x'_u     = Σ_{i ∈ N(u)} w_ui x_i,   x'_i = Σ_{u ∈ N(i)} w_ui x_u
    ω(t)     = 4 σ(t) σ(−t) = 4 σ'(t)   (band-pass, 1 at t = 0)
    β_u^(l)  = tanh(B[u, l])            (learned per user and per layer)

As in the official code there is no self loop, residual, weight matrix or non-linearity and
the last layer's output is the final embedding; the paper's residual form
``x^(l+1) = x^(l) + τ x'`` and LightGCN-style layer averaging are options. Scores are
``s_ui = x_u · x_i``. All message passing is sparse (gathers and segment sums over the edge
list); no dense users × items matrix is ever formed except score blocks in evaluation.

Variants (one code path):
  ``topkgat``   the model above;
  ``beta0``     ablation with β ≡ 0;
  ``softmax``   ablation with ω replaced by a softmax over each destination node's edges:
                users aggregate with softmax_i(z_u·z_i − β_u), items with softmax_u(z_u·z_i − β_u)
                (GAT normalisation; the √(d_u d_i) factor is dropped since softmax normalises);
  ``lightgcn``  w_ui = 1 / √(d_u d_i), no β (He et al. 2020, arXiv 2002.02126). LightGCN
                conventionally averages the layer outputs x^(0..L) (α_k = 1 / (L + 1)), so its
                default ``combine`` is ``"mean"``; the other variants default to ``"last"``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras

VARIANTS = ("topkgat", "beta0", "softmax", "lightgcn")
COMBINES = ("last", "mean")


def band_pass(t: tf.Tensor) -> tf.Tensor:
    """ω(t) = 4 σ(t) σ(−t): the derivative of the sigmoid scaled to peak at ω(0) = 1.

    Items whose similarity is close to the user's threshold (the top-K boundary) get the
    largest weight (arXiv 2601.18432, eq. for the smoothed Precision@K gradient).
    """
    return 4.0 * tf.sigmoid(t) * tf.sigmoid(-t)


def inverse_sqrt_degrees(edges: np.ndarray, num_users: int, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``1/√d`` for users and items (0 for isolated nodes); duplicate edges count twice."""
    d_user = np.bincount(edges[:, 0], minlength=num_users).astype(np.float64)
    d_item = np.bincount(edges[:, 1], minlength=num_items).astype(np.float64)
    with np.errstate(divide="ignore"):
        inv_u = np.where(d_user > 0, 1.0 / np.sqrt(d_user), 0.0)
        inv_i = np.where(d_item > 0, 1.0 / np.sqrt(d_item), 0.0)
    return inv_u, inv_i


def edge_weights(user_x: tf.Tensor, item_x: tf.Tensor, users: tf.Tensor, items: tf.Tensor,
                 beta: tf.Tensor | None, inv_sqrt_user: tf.Tensor, inv_sqrt_item: tf.Tensor,
                 variant: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Weights of every edge for the user-side and item-side aggregation of one layer.

    Args:
      user_x: ``[U, d]`` user representations entering the layer.
      item_x: ``[I, d]`` item representations entering the layer.
      users, items: ``int32 [E]`` endpoints of every edge (duplicates allowed).
      beta: ``[U]`` thresholds β_u of this layer (already through tanh), or None for 0.
      inv_sqrt_user, inv_sqrt_item: ``[U]``, ``[I]`` values of 1/√d.
      variant: one of ``VARIANTS``.

    Returns:
      ``(w_user_side [E], w_item_side [E])``: x'_u sums w_user_side · x_i over u's edges and
      x'_i sums w_item_side · x_u over i's edges (equal except for the softmax variant).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got variant={variant!r}")
    norm = tf.gather(inv_sqrt_user, users) * tf.gather(inv_sqrt_item, items)
    if variant == "lightgcn":
        return norm, norm
    z_u = tf.math.l2_normalize(user_x, axis=-1)
    z_i = tf.math.l2_normalize(item_x, axis=-1)
    shifted = tf.reduce_sum(tf.gather(z_u, users) * tf.gather(z_i, items), axis=-1)
    if beta is not None and variant != "beta0":
        shifted = shifted - tf.gather(beta, users)
    if variant == "softmax":
        # |shifted| <= 2, so exp cannot overflow and no max-subtraction is needed.
        e = tf.exp(shifted)
        by_user = tf.math.unsorted_segment_sum(e, users, tf.shape(user_x)[0])
        by_item = tf.math.unsorted_segment_sum(e, items, tf.shape(item_x)[0])
        return e / tf.gather(by_user, users), e / tf.gather(by_item, items)
    w = band_pass(shifted) * norm
    return w, w


def aggregate(user_x: tf.Tensor, item_x: tf.Tensor, users: tf.Tensor, items: tf.Tensor,
              w_user_side: tf.Tensor, w_item_side: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sparse weighted neighbour sums ``x'_u = Σ_i w x_i`` and ``x'_i = Σ_u w x_u``."""
    new_user = tf.math.unsorted_segment_sum(
        w_user_side[:, None] * tf.gather(item_x, items), users, tf.shape(user_x)[0])
    new_item = tf.math.unsorted_segment_sum(
        w_item_side[:, None] * tf.gather(user_x, users), items, tf.shape(item_x)[0])
    return new_user, new_item


@keras.utils.register_keras_serializable(package="tfcascade")
class TopKGAT(keras.Model):
    """TopKGAT (and its LightGCN / ablation baselines) over a fixed user–item graph.

    The graph (training pairs) is stored in non-trainable weights, so ``save_weights`` /
    ``load_weights`` round-trip it; ``get_config`` holds only sizes and options.

    ``call(user_ids)`` returns the scores of the given users against every item
    ``[b, num_items]``; ``propagate()`` returns the final ``(user, item)`` embeddings.

    Args:
      num_users, num_items: sizes of the id spaces.
      num_edges: number of training pairs (graph edges, duplicates included).
      dim: embedding size (64 in the paper).
      num_layers: propagation layers L (3–4 in the paper).
      variant: one of ``VARIANTS``.
      combine: ``"last"`` (official TopKGAT) or ``"mean"`` (LightGCN); None picks the variant's
        convention.
      residual: use ``x^(l+1) = x^(l) + residual_step · x'`` (the paper's gradient-ascent form).
      residual_step: τ of the residual form.
      init_stddev: std of the N(0, σ²) embedding initialisation (0.1 in the official code).
      edges: optional ``int [E, 2]`` pairs to install right away (see ``set_graph``).
    """

    def __init__(self, num_users: int, num_items: int, num_edges: int, dim: int = 64,
                 num_layers: int = 3, variant: str = "topkgat", combine: str | None = None,
                 residual: bool = False, residual_step: float = 1.0, init_stddev: float = 0.1,
                 edges: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_users", num_users), ("num_items", num_items),
                            ("num_edges", num_edges), ("dim", dim)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 0:
            raise ValueError(f"num_layers must be an integer >= 0, got num_layers={num_layers!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got variant={variant!r}")
        combine = combine or ("mean" if variant == "lightgcn" else "last")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got combine={combine!r}")
        if init_stddev <= 0:
            raise ValueError(f"init_stddev must be > 0, got init_stddev={init_stddev!r}")
        self.num_users, self.num_items, self.num_edges = int(num_users), int(num_items), int(num_edges)
        self.dim, self.num_layers, self.variant, self.combine = int(dim), int(num_layers), variant, combine
        self.residual, self.residual_step, self.init_stddev = bool(residual), float(residual_step), float(init_stddev)
        # Separate initializer instances: one unseeded instance would repeat its values.
        self.user_embedding = self.add_weight(
            name="user_embedding", shape=(self.num_users, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=init_stddev))
        self.item_embedding = self.add_weight(
            name="item_embedding", shape=(self.num_items, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=init_stddev))
        self.uses_beta = variant in ("topkgat", "softmax")
        if self.uses_beta:
            # B ~ N(0, 1), β = tanh(B): one threshold per user and layer.
            self.beta_logits = self.add_weight(
                name="beta_logits", shape=(self.num_users, max(self.num_layers, 1)),
                initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.edge_users = self.add_weight(name="edge_users", shape=(self.num_edges,), dtype=tf.int32,
                                          initializer="zeros", trainable=False)
        self.edge_items = self.add_weight(name="edge_items", shape=(self.num_edges,), dtype=tf.int32,
                                          initializer="zeros", trainable=False)
        self.inv_sqrt_user = self.add_weight(name="inv_sqrt_user_degree", shape=(self.num_users,),
                                             initializer="zeros", trainable=False)
        self.inv_sqrt_item = self.add_weight(name="inv_sqrt_item_degree", shape=(self.num_items,),
                                             initializer="zeros", trainable=False)
        self.built = True  # every weight exists already; call() takes int ids, not floats
        if edges is not None:
            self.set_graph(edges)

    def set_graph(self, edges: np.ndarray) -> None:
        """Installs the training pairs ``int [num_edges, 2]`` as the graph (duplicates kept)."""
        edges = np.asarray(edges)
        if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
            raise ValueError(f"edges must be an integer array [num_edges, 2], got shape={edges.shape} "
                             f"dtype={edges.dtype}")
        if len(edges) != self.num_edges:
            raise ValueError(f"edges must have num_edges={self.num_edges} rows, got {len(edges)}")
        for column, limit, what in ((0, self.num_users, "user"), (1, self.num_items, "item")):
            bad = np.flatnonzero((edges[:, column] < 0) | (edges[:, column] >= limit))
            if bad.size:
                raise ValueError(f"edges[{bad[0]}] has {what} id {edges[bad[0], column]} outside "
                                 f"[0, {limit})")
        inv_u, inv_i = inverse_sqrt_degrees(edges, self.num_users, self.num_items)
        self.edge_users.assign(edges[:, 0].astype(np.int32))
        self.edge_items.assign(edges[:, 1].astype(np.int32))
        self.inv_sqrt_user.assign(inv_u.astype(np.float32))
        self.inv_sqrt_item.assign(inv_i.astype(np.float32))

    def thresholds(self) -> tf.Tensor | None:
        """β = tanh(B), ``[num_users, num_layers]``, or None for variants without β."""
        return tf.tanh(self.beta_logits) if self.uses_beta else None

    def layer_representations(self) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """The ``(user [U, d], item [I, d])`` representations entering each of the L layers,
        then the last layer's output: L + 1 pairs (the first is the embedding tables)."""
        user_x, item_x = self.user_embedding, self.item_embedding
        users, items = self.edge_users, self.edge_items
        beta = self.thresholds()
        out = [(user_x, item_x)]
        for layer in range(self.num_layers):
            w_u, w_i = edge_weights(user_x, item_x, users, items,
                                    None if beta is None else beta[:, layer],
                                    self.inv_sqrt_user, self.inv_sqrt_item, self.variant)
            new_user, new_item = aggregate(user_x, item_x, users, items, w_u, w_i)
            if self.residual:
                new_user = user_x + self.residual_step * new_user
                new_item = item_x + self.residual_step * new_item
            user_x, item_x = new_user, new_item
            out.append((user_x, item_x))
        return out

    def propagate(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the L layers; returns the final ``(user [U, d], item [I, d])`` embeddings:
        the last layer's output (``combine="last"``) or the mean over the L + 1
        representations (``"mean"``, LightGCN)."""
        reps = self.layer_representations()
        if self.combine == "mean":
            scale = 1.0 / (self.num_layers + 1)
            return tf.add_n([u for u, _ in reps]) * scale, tf.add_n([i for _, i in reps]) * scale
        user_x, item_x = reps[-1]
        return tf.convert_to_tensor(user_x), tf.convert_to_tensor(item_x)

    def threshold_ranks(self, batch_size: int = 1024) -> np.ndarray | None:
        """Where each learned threshold cuts its user's ranking, layer by layer.

        For user u and layer l: the number of items i whose cosine similarity to u at the
        layer's input, cos(x_u^(l), x_i^(l)), exceeds β_u^(l) — the K of the top-K boundary
        the threshold stands for (arXiv 2601.18432, Fig. 3–4: shallow layers should cut high
        in the ranking, deeper ones lower).

        Returns:
          ``int64 [U, L]``, or None for variants without β.
        """
        if not self.uses_beta:
            return None
        beta = self.thresholds()
        reps = self.layer_representations()
        ranks = np.zeros((self.num_users, self.num_layers), np.int64)
        for layer in range(self.num_layers):
            z_u = tf.math.l2_normalize(reps[layer][0], axis=-1)
            z_i = tf.math.l2_normalize(reps[layer][1], axis=-1)
            for start in range(0, self.num_users, batch_size):
                sims = tf.matmul(z_u[start:start + batch_size], z_i, transpose_b=True)
                above = sims > beta[start:start + batch_size, layer:layer + 1]
                ranks[start:start + batch_size, layer] = tf.reduce_sum(tf.cast(above, tf.int64), axis=1).numpy()
        return ranks

    def call(self, user_ids, training: bool = False) -> tf.Tensor:
        """Scores ``[b, num_items]`` of ``user_ids`` ``[b]`` against every item."""
        user_x, item_x = self.propagate()
        return tf.matmul(tf.gather(user_x, user_ids), item_x, transpose_b=True)

    def get_config(self) -> dict:
        return {"num_users": self.num_users, "num_items": self.num_items,
                "num_edges": self.num_edges, "dim": self.dim, "num_layers": self.num_layers,
                "variant": self.variant, "combine": self.combine, "residual": self.residual,
                "residual_step": self.residual_step, "init_stddev": self.init_stddev,
                "name": self.name}
