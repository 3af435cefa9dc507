"""The cascade-loss interface and the masked building blocks every loss shares.

A cascade loss is a Keras layer ``loss(labels, stage_scores, mask=None) -> scalar``:

- ``labels [B, n]``: graded relevance, −1 = padding (TF-Ranking convention);
- ``stage_scores``: S tensors ``[B, n]`` ordered retrieval → … → last stage;
- ``mask [B, n]``: optional validity (default ``labels >= 0``).

The ground truth CS_gt is the hard top-k of the labels among valid items (k = 10).
After each call ``loss.terms`` holds the component losses (for logging).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras, no_output_mask
from tfcascade.metrics.streaming import ground_truth_tf

DEFAULT_QS = {2: (30, 20), 3: (40, 30, 20)}  # the cuts q_t of LCRON's setup (arXiv 2503.09492)
DEFAULT_STAGE_NAMES = {2: ("retrieval", "ranking"), 3: ("retrieval", "prerank", "ranking")}


def masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Σ w·v / Σ w (0 when Σ w = 0)."""
    weights = tf.cast(weights, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def bce_with_logits(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Masked mean of −[y log σ(z) + (1 − y) log(1 − σ(z))]."""
    return masked_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), weights)


@tf.custom_gradient
def _clamped_bce(p: tf.Tensor, y: tf.Tensor):
    value = -(y * tf.maximum(tf.math.log(p), -100.0) + (1.0 - y) * tf.maximum(tf.math.log1p(-p), -100.0))

    def grad(upstream):
        return upstream * (p - y) / tf.maximum(p * (1.0 - p), tf.constant(1e-12, p.dtype)), None

    return value, grad


def bce_on_probabilities(probs: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Masked mean of −[y log p + (1 − y) log(1 − p)] as PyTorch's ``BCELoss`` computes it:
    each log clamped at −100, gradient (p − y) / max(p(1 − p), 1e-12)."""
    return masked_mean(_clamped_bce(probs, tf.cast(targets, probs.dtype)), weights)


def bce_on_probabilities_eps(probs: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor,
                             eps: float = 1e-6) -> tf.Tensor:
    """Masked mean of −[y log(p + ε) + (1 − y) log(1 − p + ε)]."""
    return masked_mean(-(targets * tf.math.log(probs + eps) + (1.0 - targets) * tf.math.log(1.0 - probs + eps)),
                       weights)


def positive_ints(name: str, values, count: int | None = None) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints (``count`` of them when given), else ValueError
    naming the option."""
    values = tuple(values)
    integral = all(not isinstance(v, bool) and isinstance(v, (int, np.integer, float, np.floating))
                   and float(v).is_integer() and v > 0 for v in values)
    if (count is not None and len(values) != count) or not values or not integral:
        need = f"{count} " if count is not None else ""
        raise ValueError(f"{name} needs {need}positive integers, got {name}={list(values)!r}")
    return tuple(int(v) for v in values)


class CascadeLoss(keras.layers.Layer):
    """Base class: checks inputs, derives mask and ground truth, records ``terms``.

    Args:
      stages: number of cascade stages (2 or 3).
      k: ground-truth size (top-k labels).
      stage_qs: how many items each stage keeps at inference (default (30, 20) / (40, 30, 20)).
    """

    compute_mask = no_output_mask

    def __init__(self, stages: int = 2, k: int = 10, stage_qs: Sequence[int] | None = None, **kwargs):
        kwargs.setdefault("autocast", False)  # keep float64 inputs float64 (gradient checks)
        super().__init__(**kwargs)
        if stages not in (2, 3):
            raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
        self.stages = stages
        (self.k,) = positive_ints("k", [k])
        self.stage_qs = positive_ints("stage_qs", DEFAULT_QS[stages] if stage_qs is None else stage_qs, stages)
        if any(a < b for a, b in zip(self.stage_qs, self.stage_qs[1:])):
            raise ValueError(f"stage_qs must be non-increasing, got stage_qs={list(self.stage_qs)}")
        self.terms: dict[str, tf.Tensor] = {}
        # No state depends on the inputs (subclasses make theirs in __init__): nothing for Keras
        # to build, e.g. when the loss is used outside the model's call (Keras 3 warns then).
        self.built = True

    def call(self, labels, stage_scores, mask=None):
        first = tf.convert_to_tensor(stage_scores[0] if not isinstance(stage_scores, tf.Tensor) else stage_scores)
        dtype = tf.float64 if first.dtype == tf.float64 else tf.float32  # float64 for gradient checks
        labels = tf.cast(tf.convert_to_tensor(labels), dtype)
        if labels.shape.rank != 2:
            raise ValueError(f"labels must be [B, n], got labels.shape={labels.shape}")
        if isinstance(stage_scores, tf.Tensor) and stage_scores.shape.rank == 3:
            stage_scores = tf.unstack(stage_scores, axis=1)
        if len(stage_scores) != self.stages:
            raise ValueError(
                f"{type(self).__name__} was built for stages={self.stages} but got {len(stage_scores)} stage scores")
        scores = []
        for i, s in enumerate(stage_scores):
            s = tf.cast(tf.convert_to_tensor(s), dtype)
            if not s.shape.is_compatible_with(labels.shape):
                raise ValueError(f"stage_scores[{i}].shape={s.shape} does not match labels.shape={labels.shape}")
            scores.append(s)
        valid = labels >= 0
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if not mask.shape.is_compatible_with(labels.shape):
                raise ValueError(f"mask.shape={mask.shape} does not match labels.shape={labels.shape}")
            valid = tf.logical_and(valid, tf.cast(mask, tf.bool))
        weights = tf.cast(valid, dtype)
        gt = tf.cast(ground_truth_tf(labels, self.k, valid), dtype)
        terms = self.compute_terms(labels, scores, weights, gt)
        self.terms = terms
        return self.combine(terms)

    def compute_terms(self, labels, scores, weights, gt) -> dict[str, tf.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def combine(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.add_n(list(terms.values()))

    def get_config(self) -> dict:
        return {**super().get_config(), "stages": self.stages, "k": self.k, "stage_qs": list(self.stage_qs)}
