"""Cascade metrics on numpy arrays (REFERENCES.md section 1).

Conventions: ``labels [B, n]`` graded relevance, −1 = padding; the ground truth CS_gt of a
request is the hard top-K of its labels among valid items (ties → lower index). Scores are
ranked descending with ties broken towards the lower index; masked items are never selected.

- Recall@K@q of one stage: |top-q(scores) ∩ CS_gt| / K.
- Joint Recall@K@q_T: |CS_out ∩ CS_gt| / K with CS_out the output of the real cascade.
- NDCG@K: binary gain on CS_gt, DCG = Σ_{r≤K} [item_r ∈ CS_gt] / log2(r + 1), IDCG over
  min(K, |CS_gt|) positions.
Each returns the mean over requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _valid(labels: np.ndarray, mask) -> np.ndarray:
    labels = np.asarray(labels)
    return labels >= 0 if mask is None else (np.asarray(mask) > 0) & (labels >= 0)


def _order(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per row, indices by score descending (ties → lower index), disallowed items last."""
    s = np.asarray(scores, np.float64)
    idx = np.broadcast_to(np.arange(s.shape[-1]), s.shape)
    return np.lexsort((idx, -s, ~allowed), axis=-1)


def _top(scores, allowed, q):
    """``[B, n]`` bool: each row's top-q allowed items."""
    order = _order(scores, allowed)[:, :q]
    out = np.zeros(allowed.shape, bool)
    np.put_along_axis(out, order, True, axis=-1)
    return out & allowed


def ground_truth(labels, k: int = 10, mask=None) -> np.ndarray:
    """``[B, n]`` bool: the hard top-k of the labels among valid items."""
    labels = np.asarray(labels, np.float64)
    return _top(labels, _valid(labels, mask), k)


def stage_recall(labels, scores, k: int = 10, q: int = 20, mask=None) -> float:
    """Mean Recall@k@q of one stage over the whole valid list."""
    valid = _valid(labels, mask)
    gt = ground_truth(labels, k, mask)
    return float(np.mean((_top(scores, valid, q) & gt).sum(-1) / k))


def joint_recall(labels, stage_scores: Sequence, k: int = 10, qs: Sequence[int] = (30, 20), mask=None) -> float:
    """Mean Joint Recall@k@q_T of the cascade ``stage_scores`` (earliest stage first)."""
    if len(stage_scores) != len(qs):
        raise ValueError(f"need one q per stage: got {len(stage_scores)} stage scores and qs={list(qs)}")
    kept = _valid(labels, mask)
    for scores, q in zip(stage_scores, qs):
        kept = _top(scores, kept, q)
    gt = ground_truth(labels, k, mask)
    return float(np.mean((kept & gt).sum(-1) / k))


def ndcg(labels, scores, k: int = 10, mask=None) -> float:
    """Mean NDCG@k with binary gain on the ground truth (top-k labels)."""
    valid = _valid(labels, mask)
    gt = ground_truth(labels, k, mask)
    order = _order(scores, valid)[:, :k]
    hits = np.take_along_axis(gt & valid, order, axis=-1)
    discounts = 1.0 / np.log2(np.arange(2, order.shape[-1] + 2))
    dcg = (hits * discounts).sum(-1)
    n_ideal = np.minimum(k, gt.sum(-1))
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.maximum(n_ideal - 1, 0)] * (n_ideal > 0)
    return float(np.mean(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)))
