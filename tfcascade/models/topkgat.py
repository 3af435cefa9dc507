"""TopKGAT: graph attention whose layer is a gradient-ascent step of smoothed Precision@K.

Chen et al., "TopKGAT: A Top-K Objective-Driven Architecture for Recommendation", WWW 2026,
arXiv 2601.18432 (REFERENCES.md section 6). On the user–item bipartite graph built from the
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

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras

logger = logging.getLogger(__name__)

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

    def propagate(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the L layers; returns the final ``(user [U, d], item [I, d])`` embeddings."""
        user_x, item_x = self.user_embedding, self.item_embedding
        users, items = self.edge_users, self.edge_items
        beta = self.thresholds()
        user_sum, item_sum = user_x, item_x
        for layer in range(self.num_layers):
            w_u, w_i = edge_weights(user_x, item_x, users, items,
                                    None if beta is None else beta[:, layer],
                                    self.inv_sqrt_user, self.inv_sqrt_item, self.variant)
            new_user, new_item = aggregate(user_x, item_x, users, items, w_u, w_i)
            if self.residual:
                new_user = user_x + self.residual_step * new_user
                new_item = item_x + self.residual_step * new_item
            user_x, item_x = new_user, new_item
            if self.combine == "mean":
                user_sum, item_sum = user_sum + user_x, item_sum + item_x
        if self.combine == "mean":
            scale = 1.0 / (self.num_layers + 1)
            return user_sum * scale, item_sum * scale
        return tf.convert_to_tensor(user_x), tf.convert_to_tensor(item_x)

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


# ----------------------------------------------------------------------------------------
# Full-ranking evaluation (Recall@K, NDCG@K with training items excluded)
# ----------------------------------------------------------------------------------------

DEFAULT_KS = (1, 3, 5, 10, 20)


class FullRankingEvaluator:
    """Recall@K and NDCG@K over all items with the known items of each user excluded.

    For user u with ground-truth set G_u (unique items of the split), the top-K list R_u of
    the items not excluded (training items), and hit_r = [R_u[r] ∈ G_u]::

        Recall@K = Σ_{r<K} hit_r / min(|G_u|, K)
        NDCG@K   = Σ_{r<K} hit_r / log2(r + 2)  /  Σ_{r<min(|G_u|, K)} 1 / log2(r + 2)

    averaged over the users with |G_u| > 0 (REFERENCES.md section 6, official protocol).
    Users are scored in blocks so that one block of scores stays under ``memory_bytes``.

    Args:
      truth: ``int [rows, 2]`` ground-truth pairs (duplicates ignored).
      exclude: ``int [rows, 2]`` pairs never to recommend (the training pairs).
      num_users, num_items: id space sizes.
      ks: cut-offs.
      memory_bytes: budget for one block (scores + ground-truth mask), ~1 GB by default.
    """

    def __init__(self, truth: np.ndarray, exclude: np.ndarray, num_users: int, num_items: int,
                 ks: tuple[int, ...] = DEFAULT_KS, memory_bytes: int = 2**30):
        if not ks or any((not isinstance(k, (int, np.integer))) or k <= 0 for k in ks):
            raise ValueError(f"ks must be positive integers, got ks={ks!r}")
        if max(ks) > num_items:
            raise ValueError(f"ks must be <= num_items={num_items}, got ks={ks!r}")
        self.ks, self.kmax, self.num_items = tuple(int(k) for k in ks), int(max(ks)), int(num_items)
        truth = np.unique(np.asarray(truth, np.int64).reshape(-1, 2), axis=0)
        exclude = np.unique(np.asarray(exclude, np.int64).reshape(-1, 2), axis=0)
        self.users = np.unique(truth[:, 0])
        # Scores, truth mask and top-k workspace: ~12 bytes per (user, item) cell.
        block = max(1, int(memory_bytes // (12 * num_items)))
        self.blocks = []
        for start in range(0, len(self.users), block):
            block_users = self.users[start:start + block]
            self.blocks.append((
                tf.constant(block_users, tf.int32),
                tf.constant(_local_pairs(truth, block_users), tf.int32),
                tf.constant(_local_pairs(exclude, block_users), tf.int32),
            ))
        discount = 1.0 / np.log2(np.arange(2, self.kmax + 2))
        self._discount = tf.constant(discount, tf.float32)
        self._ideal = tf.constant(np.cumsum(discount), tf.float32)

    @tf.function(reduce_retracing=True)
    def _block_sums(self, user_x, item_x, users, truth_idx, exclude_idx):
        b = tf.shape(users)[0]
        scores = tf.matmul(tf.gather(user_x, users), item_x, transpose_b=True)
        neg_inf = tf.fill(tf.shape(exclude_idx)[:1], tf.constant(-np.inf, scores.dtype))
        scores = tf.tensor_scatter_nd_update(scores, exclude_idx, neg_inf)
        top_values, top_items = tf.math.top_k(scores, k=self.kmax)
        truth_mask = tf.scatter_nd(truth_idx, tf.ones(tf.shape(truth_idx)[:1], tf.float32),
                                   tf.stack([b, self.num_items]))
        # Excluded items sit at -inf: they can only fill lists of users with < K candidates.
        hits = tf.gather(truth_mask, top_items, batch_dims=1) * tf.cast(
            tf.math.is_finite(top_values), tf.float32)
        n_truth = tf.reduce_sum(truth_mask, axis=1)
        sums = {}
        for k in self.ks:
            found = tf.reduce_sum(hits[:, :k], axis=1)
            cap = tf.minimum(n_truth, float(k))
            dcg = tf.reduce_sum(hits[:, :k] * self._discount[:k], axis=1)
            idcg = tf.gather(self._ideal, tf.cast(cap, tf.int32) - 1)
            sums[f"recall@{k}"] = tf.reduce_sum(found / cap)
            sums[f"ndcg@{k}"] = tf.reduce_sum(dcg / idcg)
        return sums

    def evaluate(self, user_x: tf.Tensor, item_x: tf.Tensor) -> dict[str, float]:
        """Mean metrics over the users that have ground truth (keys ``recall@K``, ``ndcg@K``)."""
        if len(self.users) == 0:
            raise ValueError("the ground-truth split has no pairs: nothing to evaluate")
        user_x = tf.convert_to_tensor(user_x, tf.float32)
        item_x = tf.convert_to_tensor(item_x, tf.float32)
        totals: dict[str, float] = {}
        for users, truth_idx, exclude_idx in self.blocks:
            for key, value in self._block_sums(user_x, item_x, users, truth_idx, exclude_idx).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        order = [f"{m}@{k}" for m in ("recall", "ndcg") for k in self.ks]
        return {key: totals[key] / len(self.users) for key in order}


def _local_pairs(pairs: np.ndarray, block_users: np.ndarray) -> np.ndarray:
    """Rows of ``pairs`` whose user is in ``block_users``, as ``(row in block, item)``."""
    position = np.searchsorted(block_users, pairs[:, 0])
    position = np.minimum(position, len(block_users) - 1)
    keep = block_users[position] == pairs[:, 0]
    return np.stack([position[keep], pairs[keep, 1]], axis=1).reshape(-1, 2)


# ----------------------------------------------------------------------------------------
# Training: full-batch BPR, AdamW, validation every few epochs, early stopping
# ----------------------------------------------------------------------------------------


class NegativeSampler:
    """One uniform negative item per training row, rejecting the user's training items.

    Rejected draws are redrawn until none is a training item of its user (the official
    protocol). Users who have interacted with every item cannot get a negative: an error.
    """

    def __init__(self, pairs: np.ndarray, num_items: int, seed: int = 0):
        pairs = np.asarray(pairs, np.int64)
        self.users = pairs[:, 0]
        self.num_items = int(num_items)
        self.known = np.unique(pairs[:, 0] * num_items + pairs[:, 1])
        per_user = np.bincount(self.known // num_items)
        if per_user.size and per_user.max() >= num_items:
            user = int(np.argmax(per_user))
            raise ValueError(f"user {user} has interacted with all {num_items} items: no negative "
                             "item can be sampled for it")
        self.rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """``int32 [rows]`` negatives, one per training row."""
        negatives = self.rng.integers(0, self.num_items, size=len(self.users))
        todo = np.arange(len(self.users))
        while todo.size:
            keys = self.users[todo] * self.num_items + negatives[todo]
            position = np.minimum(np.searchsorted(self.known, keys), len(self.known) - 1)
            todo = todo[self.known[position] == keys]
            negatives[todo] = self.rng.integers(0, self.num_items, size=todo.size)
        return negatives.astype(np.int32)


def bpr_loss(model: TopKGAT, users: tf.Tensor, items: tf.Tensor, negatives: tf.Tensor,
             reg: float) -> tf.Tensor:
    """Mean softplus(s_uj − s_ui) + reg · ½ (mean‖e⁰_u‖² + mean‖e⁰_i‖² + mean‖e⁰_j‖²).

    BPR (Rendle et al. 2009) over all rows at once, with the layer-0 embedding penalty of the
    official TopKGAT code (REFERENCES.md section 6).
    """
    user_x, item_x = model.propagate()
    u = tf.gather(user_x, users)
    pos = tf.reduce_sum(u * tf.gather(item_x, items), axis=-1)
    neg = tf.reduce_sum(u * tf.gather(item_x, negatives), axis=-1)
    loss = tf.reduce_mean(tf.nn.softplus(neg - pos))
    if reg:
        def mean_sq(table, ids):
            return tf.reduce_mean(tf.reduce_sum(tf.square(tf.gather(table, ids)), axis=-1))
        penalty = (mean_sq(model.user_embedding, users) + mean_sq(model.item_embedding, items)
                   + mean_sq(model.item_embedding, negatives))
        loss = loss + reg * 0.5 * penalty
    return loss


def make_train_step(model: TopKGAT, optimizer, reg: float, jit_compile: bool = False):
    """A compiled full-batch step ``step(users, items, negatives) -> loss``."""

    @tf.function(jit_compile=jit_compile)
    def step(users, items, negatives):
        with tf.GradientTape() as tape:
            loss = bpr_loss(model, users, items, negatives, reg)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return step



def _summary_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar written with TF core only (works without the tensorboard package).

    Same record as ``tf.summary.scalar``: a float32 scalar tagged for the "scalars" plugin.
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                     metadata=metadata.SerializeToString())


@dataclasses.dataclass
class TrainConfig:
    """Training and evaluation settings; the defaults are the official TopKGAT protocol.

    Attributes:
      epochs: maximum number of full-batch epochs (one optimizer step each).
      lr: AdamW learning rate (0.1).
      weight_decay: AdamW decoupled weight decay on all parameters, β included (1e-4).
      reg: λ of the layer-0 embedding penalty (1e-4).
      eval_every: validate every this many epochs (20).
      patience: stop after this many epochs without a strictly better validation NDCG@20 (200).
      ks: cut-offs of the evaluation.
      seed: seeds the negative sampler (the model's initialisation is seeded by TF's global seed).
      jit_compile: compile the epoch step with XLA (about 2x faster on CPU than graph mode).
      memory_bytes: block budget of the evaluation.
    """

    epochs: int = 3000
    lr: float = 0.1
    weight_decay: float = 1e-4
    reg: float = 1e-4
    eval_every: int = 20
    patience: int = 200
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    jit_compile: bool = True
    memory_bytes: int = 2**30

    def __post_init__(self):
        for name in ("epochs", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)!r}")
        for name in ("lr",):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)!r}")
        for name in ("weight_decay", "reg", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={getattr(self, name)!r}")


@dataclasses.dataclass
class TrainResult:
    """What ``train_topkgat`` found.

    Attributes:
      best_epoch: epoch (1-based) of the best validation NDCG@20 (0 if never validated).
      valid, test: metrics at the best epoch.
      seconds_per_epoch: mean wall time of one epoch (negative sampling + the training step),
        the first (tracing) epoch excluded; validation time is not included.
      epochs_run: epochs actually trained.
      history: ``[(epoch, loss, valid metrics)]`` at every validation.
    """

    best_epoch: int
    valid: dict
    test: dict
    seconds_per_epoch: float
    epochs_run: int
    history: list


def train_topkgat(model: TopKGAT, data, config: TrainConfig | None = None,
                  log_dir: str | Path | None = None) -> TrainResult:
    """Trains ``model`` on ``data.train`` with early stopping on ``data.valid``.

    Every epoch is one AdamW step on the BPR loss over all training rows, with one fresh
    uniform negative per row. Every ``eval_every`` epochs the validation split is ranked; the
    weights with the strictly best NDCG@20 (or the largest K in ``ks``) are kept, and the test
    split is ranked with them at the end. Progress goes to ``logging`` and, with ``log_dir``, to
    TensorBoard (``loss`` every epoch, ``valid/<metric>`` at every validation).

    Args:
      model: a ``TopKGAT`` whose graph is ``data.train``.
      data: an ``Interactions`` (``tfcascade.data.interactions``).
      config: ``TrainConfig``; None uses the defaults.
      log_dir: optional TensorBoard folder.

    Returns:
      A ``TrainResult``.
    """
    config = config or TrainConfig()
    if (data.num_users, data.num_items, len(data.train)) != (model.num_users, model.num_items, model.num_edges):
        raise ValueError(
            f"model sizes (users={model.num_users}, items={model.num_items}, edges={model.num_edges}) "
            f"do not match the data (users={data.num_users}, items={data.num_items}, "
            f"train rows={len(data.train)})")
    key = f"ndcg@{20 if 20 in config.ks else max(config.ks)}"
    sampler = NegativeSampler(data.train, data.num_items, seed=config.seed)
    valid_eval = FullRankingEvaluator(data.valid, data.train, data.num_users, data.num_items,
                                      config.ks, config.memory_bytes)
    optimizer = keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay,
                                       epsilon=1e-8)
    step = make_train_step(model, optimizer, config.reg, config.jit_compile)
    users = tf.constant(data.train[:, 0], tf.int32)
    items = tf.constant(data.train[:, 1], tf.int32)
    writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None
    best = {"epoch": 0, "score": -np.inf, "weights": None, "valid": {}}
    step_times, history, epoch = [], [], 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        negatives = sampler.sample()
        loss = float(step(users, items, tf.constant(negatives)))
        step_times.append(time.perf_counter() - t0)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at epoch {epoch}; lower lr={config.lr}")
        if writer:
            with writer.as_default():
                _summary_scalar("loss", loss, step=epoch)
        if epoch % config.eval_every and epoch != config.epochs:
            continue
        metrics = valid_eval.evaluate(*model.propagate())
        history.append((epoch, loss, metrics))
        improved = metrics[key] > best["score"]
        if improved:
            best = {"epoch": epoch, "score": metrics[key], "valid": metrics,
                    "weights": [v.numpy() for v in model.trainable_variables]}
        logger.info("epoch %d loss %.5f valid %s %.5f recall@%d %.5f%s (%.3f s/epoch)", epoch, loss,
                    key, metrics[key], max(config.ks), metrics[f"recall@{max(config.ks)}"],
                    " *" if improved else "", float(np.mean(step_times[1:] or step_times)))
        if writer:
            with writer.as_default():
                for name, value in metrics.items():
                    _summary_scalar(f"valid/{name}", value, step=epoch)
            writer.flush()
        if epoch - best["epoch"] >= config.patience:
            logger.info("early stop at epoch %d: no improvement since epoch %d", epoch, best["epoch"])
            break
    if best["weights"] is not None:
        for variable, value in zip(model.trainable_variables, best["weights"], strict=True):
            variable.assign(value)
    test_eval = FullRankingEvaluator(data.test, data.train, data.num_users, data.num_items,
                                     config.ks, config.memory_bytes)
    test = test_eval.evaluate(*model.propagate())
    if writer:
        with writer.as_default():
            for name, value in test.items():
                _summary_scalar(f"test/{name}", value, step=best["epoch"])
        writer.close()
    seconds = float(np.mean(step_times[1:] or step_times))
    return TrainResult(best["epoch"], best["valid"], test, seconds, epoch, history)
