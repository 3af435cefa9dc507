"""Streaming, masked Keras metrics of a cascade (same definitions as ``metrics.functions``).

``y_true`` is the graded label ``[B, n]`` (−1 = padding). ``JointRecall`` takes the stacked
stage scores ``[B, S, n]`` (earliest stage first); ``StageRecall`` and ``NDCG`` one stage's
``[B, n]``. Each keeps a (weighted) sum of per-request values and a count.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.ops.cascade_select import cascade_select


def ground_truth_tf(labels: tf.Tensor, k: int, valid: tf.Tensor) -> tf.Tensor:
    """``[B, n]`` bool: hard top-k of the labels among valid items (ties → lower index)."""
    kept, _, _ = cascade_select([labels], [k], valid)
    return kept


class _MeanOverRequests(keras.metrics.Metric):
    def __init__(self, name: str, k: int = 10, **kwargs):
        super().__init__(name=name, **kwargs)
        if int(k) <= 0:
            raise ValueError(f"k must be a positive integer, got k={k!r}")
        self.k = int(k)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def _per_request(self, labels, y_pred, valid):  # pragma: no cover - abstract
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.float32)
        valid = labels >= 0
        values = tf.cast(self._per_request(labels, y_pred, valid), tf.float64)
        weight = tf.ones_like(values) if sample_weight is None else tf.cast(
            tf.reshape(sample_weight, tf.shape(values)), tf.float64)
        self.total.assign_add(tf.reduce_sum(values * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), tf.float32)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k}


@keras.utils.register_keras_serializable(package="tfcascade")
class JointRecall(_MeanOverRequests):
    """Joint Recall@k@q_T = |CS_out ∩ CS_gt| / k of the hard cascade (the golden metric)."""

    def __init__(self, k: int = 10, qs: Sequence[int] = (30, 20), name: str | None = None, **kwargs):
        self.qs = [int(q) for q in qs]
        super().__init__(name or f"joint_recall_at_{k}_at_{self.qs[-1]}", k=k, **kwargs)

    def _per_request(self, labels, y_pred, valid):
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank != 3 or (y_pred.shape[1] is not None and y_pred.shape[1] != len(self.qs)):
            raise ValueError(f"y_pred must be stacked stage scores [B, S={len(self.qs)}, n], got shape {y_pred.shape}")
        stages = tf.unstack(y_pred, axis=1)
        kept, _, _ = cascade_select(stages, self.qs, valid)
        gt = ground_truth_tf(labels, self.k, valid)
        return tf.reduce_sum(tf.cast(kept & gt, tf.float32), -1) / self.k

    def get_config(self) -> dict:
        return {**super().get_config(), "qs": self.qs}


@keras.utils.register_keras_serializable(package="tfcascade")
class StageRecall(_MeanOverRequests):
    """Recall@k@q of one stage on the whole valid list."""

    def __init__(self, k: int = 10, q: int = 20, name: str | None = None, **kwargs):
        self.q = int(q)
        super().__init__(name or f"recall_at_{k}_at_{q}", k=k, **kwargs)

    def _per_request(self, labels, y_pred, valid):
        kept, _, _ = cascade_select([y_pred], [self.q], valid)
        gt = ground_truth_tf(labels, self.k, valid)
        return tf.reduce_sum(tf.cast(kept & gt, tf.float32), -1) / self.k

    def get_config(self) -> dict:
        return {**super().get_config(), "q": self.q}


@keras.utils.register_keras_serializable(package="tfcascade")
class NDCG(_MeanOverRequests):
    """NDCG@k with binary gain on the ground truth, DCG discount 1/log2(rank + 1)."""

    def __init__(self, k: int = 10, name: str | None = None, **kwargs):
        super().__init__(name or f"ndcg_at_{k}", k=k, **kwargs)

    def _per_request(self, labels, y_pred, valid):
        gt = ground_truth_tf(labels, self.k, valid)
        _, idx, _ = cascade_select([y_pred], [self.k], valid)
        hits = tf.where(idx >= 0, tf.cast(tf.gather(gt, tf.maximum(idx, 0), batch_dims=1), tf.float32), 0.0)
        discounts = 1.0 / (tf.math.log(tf.range(2, self.k + 2, dtype=tf.float32)) / tf.math.log(2.0))
        dcg = tf.reduce_sum(hits * discounts[: tf.shape(hits)[-1]], -1)
        n_ideal = tf.minimum(self.k, tf.reduce_sum(tf.cast(gt, tf.int32), -1))
        ideal = tf.gather(tf.concat([[0.0], tf.cumsum(discounts)], 0), n_ideal)
        return tf.math.divide_no_nan(dcg, ideal)
