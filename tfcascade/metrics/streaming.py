"""Streaming, masked Keras metrics of a cascade (same definitions as ``metrics.functions``).

``y_true`` is the graded label ``[B, n]`` (−1 = padding). ``JointRecall`` takes the stacked
stage scores ``[B, S, n]`` (earliest stage first); ``StageRecall`` and ``NDCG`` one stage's
``[B, n]``. Each keeps a weighted sum of per-request values and the sum of their weights
(``sample_weight`` per request, ``[B]``); requests with no valid item (and for NDCG with
IDCG = 0) get weight 0. Scores are compared in float32, ties → lower index.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.metrics.functions import GAINS
from tfcascade.ops.cascade_select import cascade_select


def ground_truth_tf(labels: tf.Tensor, k: int, valid: tf.Tensor) -> tf.Tensor:
    """``[B, n]`` bool: hard top-k of the labels among valid items (ties → lower index)."""
    kept, _, _ = cascade_select([labels], [k], valid)
    return kept


def _recall_tf(kept: tf.Tensor, gt: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per request |kept ∩ gt| / |gt| and its weight ([|gt| > 0])."""
    n_gt = tf.reduce_sum(tf.cast(gt, tf.float32), -1)
    hits = tf.reduce_sum(tf.cast(kept & gt, tf.float32), -1)
    return tf.math.divide_no_nan(hits, n_gt), tf.cast(n_gt > 0, tf.float32)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return value


class _MeanOverRequests(keras.metrics.Metric):
    """Weighted mean over requests of a per-request value."""

    def __init__(self, name: str, k: int = 10, **kwargs):
        super().__init__(name=name, **kwargs)
        self.k = _positive("k", k)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def _per_request(self, labels, y_pred, valid):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_pred(self, labels, y_pred):
        if not y_pred.shape.is_compatible_with(labels.shape):
            raise ValueError(f"y_pred.shape={y_pred.shape} does not match y_true.shape={labels.shape}")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.float32)
        if labels.shape.rank != 2:
            raise ValueError(f"y_true must be graded labels [B, n], got shape {labels.shape}")
        valid = labels >= 0
        values, row_weight = self._per_request(labels, tf.cast(y_pred, tf.float32), valid)
        weight = tf.cast(row_weight, tf.float64)
        if sample_weight is not None:
            weight *= tf.reshape(tf.cast(sample_weight, tf.float64), tf.shape(weight))
        self.total.assign_add(tf.reduce_sum(tf.cast(values, tf.float64) * weight))
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
    """Joint Recall@k@q_T = |CS_out ∩ CS_gt| / |CS_gt| of the hard cascade (the golden metric).

    Args:
      k: ground-truth size K.
      qs: the stages' cuts q_1 ≥ … ≥ q_S; ``y_pred`` is ``[B, S, n]``.
    """

    def __init__(self, k: int = 10, qs: Sequence[int] = (30, 20), name: str | None = None, **kwargs):
        self.qs = [_positive("qs", q) for q in qs]
        if not self.qs or any(a < b for a, b in zip(self.qs, self.qs[1:])):
            raise ValueError(f"qs must be non-empty and non-increasing, got qs={list(qs)}")
        super().__init__(name or f"joint_recall_at_{k}_at_{self.qs[-1]}", k=k, **kwargs)

    def _check_pred(self, labels, y_pred):
        s = len(self.qs)
        if y_pred.shape.rank != 3 or (y_pred.shape[1] is not None and y_pred.shape[1] != s):
            raise ValueError(f"y_pred must be stacked stage scores [B, S={s}, n], got shape {y_pred.shape}")

    def _per_request(self, labels, y_pred, valid):
        self._check_pred(labels, y_pred)
        kept, _, _ = cascade_select(tf.unstack(y_pred, num=len(self.qs), axis=1), self.qs, valid)
        return _recall_tf(kept, ground_truth_tf(labels, self.k, valid))

    def get_config(self) -> dict:
        return {**super().get_config(), "qs": self.qs}


@keras.utils.register_keras_serializable(package="tfcascade")
class StageRecall(_MeanOverRequests):
    """Recall@k@q of one stage alone on the whole valid list (``y_pred`` ``[B, n]``)."""

    def __init__(self, k: int = 10, q: int = 20, name: str | None = None, **kwargs):
        self.q = _positive("q", q)
        super().__init__(name or f"recall_at_{k}_at_{q}", k=k, **kwargs)

    def _per_request(self, labels, y_pred, valid):
        self._check_pred(labels, y_pred)
        kept, _, _ = cascade_select([y_pred], [self.q], valid)
        return _recall_tf(kept, ground_truth_tf(labels, self.k, valid))

    def get_config(self) -> dict:
        return {**super().get_config(), "q": self.q}


@keras.utils.register_keras_serializable(package="tfcascade")
class NDCG(_MeanOverRequests):
    """NDCG@k, discount 1/log2(rank + 1), gain ``linear`` (label), ``exp`` or ``binary``."""

    def __init__(self, k: int = 10, gain: str = "linear", name: str | None = None, **kwargs):
        if gain not in GAINS:
            raise ValueError(f"gain must be one of {GAINS}, got gain={gain!r}")
        self.gain = gain
        super().__init__(name or f"ndcg_at_{k}", k=k, **kwargs)

    def _gains(self, labels, valid):
        if self.gain == "binary":
            g = tf.cast(ground_truth_tf(labels, self.k, valid), tf.float32)
        elif self.gain == "exp":
            g = tf.pow(2.0, tf.maximum(labels, 0.0)) - 1.0
        else:
            g = tf.maximum(labels, 0.0)
        return tf.where(valid, g, 0.0)

    def _per_request(self, labels, y_pred, valid):
        self._check_pred(labels, y_pred)
        g = self._gains(labels, valid)
        _, idx, _ = cascade_select([y_pred], [self.k], valid)
        top_gains = tf.where(idx >= 0, tf.gather(g, tf.maximum(idx, 0), batch_dims=1), 0.0)
        cut = tf.shape(idx)[-1]
        discounts = 1.0 / (tf.math.log(tf.cast(tf.range(2, cut + 2), tf.float32)) / tf.math.log(2.0))
        dcg = tf.reduce_sum(top_gains * discounts, -1)
        idcg = tf.reduce_sum(tf.math.top_k(g, k=cut).values * discounts, -1)
        return tf.math.divide_no_nan(dcg, idcg), tf.cast(idcg > 0, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "gain": self.gain}
