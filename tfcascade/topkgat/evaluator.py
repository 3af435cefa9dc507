"""Full-ranking evaluation of graph recommenders: Recall@K and NDCG@K over every item, with
each user's known (training) items excluded — the official TopKGAT protocol (arXiv 2601.18432)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

DEFAULT_KS = (1, 3, 5, 10, 20)


class FullRankingEvaluator:
    """Recall@K and NDCG@K over all items with the known items of each user excluded.

    For user u with ground-truth set G_u (the items of the split), n_u its number of
    ground-truth rows, the top-K list R_u of the items not excluded (training items), and
    hit_r = [R_u[r] ∈ G_u]::

        Recall@K = Σ_{r<K} hit_r / min(n_u, K)
        NDCG@K   = Σ_{r<K} hit_r / log2(r + 2)  /  Σ_{r<min(n_u, K)} 1 / log2(r + 2)

    averaged over the users with n_u > 0 (the official protocol of arXiv 2601.18432). The
    official code counts n_u in rows, so a pair listed twice in the split counts twice in the
    denominators (it can only be hit once): ``count_duplicates=True``, the default;
    ``count_duplicates=False`` uses n_u = |G_u|. Ground-truth items that are also excluded
    (training items) can never be hit but still count in n_u, as in the official code. Equal
    scores rank by item id (``tf.math.top_k``); with TopKGAT that decides the list of every user
    without training pairs, whose final embedding is zero (PyTorch's CPU ``topk``, in the
    official code, returns the same K items in another order: same Recall, NDCG off by a
    constant). Users are scored in blocks so that one block of scores stays under ``memory_bytes``.

    Args:
      truth: ``int [rows, 2]`` ground-truth pairs.
      exclude: ``int [rows, 2]`` pairs never to recommend (the training pairs).
      num_users, num_items: id space sizes.
      ks: cut-offs.
      memory_bytes: budget for one block (scores + ground-truth mask), ~1 GB by default.
      count_duplicates: count repeated ground-truth rows in n_u (official) or not.
    """

    def __init__(self, truth: np.ndarray, exclude: np.ndarray, num_users: int, num_items: int,
                 ks: tuple[int, ...] = DEFAULT_KS, memory_bytes: int = 2**30,
                 count_duplicates: bool = True):
        if not ks or any((not isinstance(k, (int, np.integer))) or k <= 0 for k in ks):
            raise ValueError(f"ks must be positive integers, got ks={ks!r}")
        if max(ks) > num_items:
            raise ValueError(f"ks must be <= num_items={num_items}, got ks={ks!r}")
        self.ks, self.kmax, self.num_items = tuple(int(k) for k in ks), int(max(ks)), int(num_items)
        truth = np.asarray(truth, np.int64).reshape(-1, 2)
        rows_per_user = np.bincount(truth[:, 0]) if len(truth) else np.zeros(0, np.int64)
        truth = np.unique(truth, axis=0)
        n_truth = rows_per_user if count_duplicates else np.bincount(truth[:, 0], minlength=len(rows_per_user))
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
                tf.constant(n_truth[block_users], tf.float32),
            ))
        discount = 1.0 / np.log2(np.arange(2, self.kmax + 2))
        self._discount = tf.constant(discount, tf.float32)
        self._ideal = tf.constant(np.cumsum(discount), tf.float32)

    @tf.function(reduce_retracing=True)
    def _block_sums(self, user_x, item_x, users, truth_idx, exclude_idx, n_truth):
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
        for block in self.blocks:
            for key, value in self._block_sums(user_x, item_x, *block).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        order = [f"{m}@{k}" for m in ("recall", "ndcg") for k in self.ks]
        return {key: totals[key] / len(self.users) for key in order}


def _local_pairs(pairs: np.ndarray, block_users: np.ndarray) -> np.ndarray:
    """Rows of ``pairs`` whose user is in ``block_users``, as ``(row in block, item)``."""
    position = np.searchsorted(block_users, pairs[:, 0])
    position = np.minimum(position, len(block_users) - 1)
    keep = block_users[position] == pairs[:, 0]
    return np.stack([position[keep], pairs[keep, 1]], axis=1).reshape(-1, 2)
