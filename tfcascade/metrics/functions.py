"""Cascade metrics on numpy arrays (LCRON, arXiv 2503.09492 §5).

Conventions: ``labels [B, n]`` graded relevance, −1 = padding, optional ``mask [B, n]``
(valid = ``labels >= 0`` and mask). The ground truth CS_gt of a request is the hard top-K of
its labels among valid items (ties → lower index). Scores are ranked descending with ties
broken towards the lower index; invalid items are never selected. A stage asked to keep more
items than it was given keeps all of them.

- Recall@K@q of one stage alone: |top-q(scores) ∩ CS_gt| / |CS_gt|.
- Joint Recall@K@q_T (the golden metric): |CS_out ∩ CS_gt| / |CS_gt|, CS_out = S_T,
  S_0 = valid items, S_t = top-q_t of S_{t−1} by stage t's scores.
  |CS_gt| = min(K, #valid) — that is K on every request of the RecFlow protocol; a request
  with fewer than K valid items is scored against all of them instead of being capped below 1.
- NDCG@K = DCG@K / IDCG@K, DCG@K = Σ_{r≤K} G(item_r) / log2(r + 1) over the top-K valid items
  by score, IDCG@K the same over the labels' own order. Gain G (``gain``):
  ``"linear"`` G = label (default: "graded labels as gains", TF-Ranking's identity gain),
  ``"exp"`` G = 2^label − 1 (Burges' exponential gain), ``"binary"`` G = [item ∈ CS_gt].

Each returns the mean over requests; requests with no valid item (and for NDCG, with
IDCG = 0) are left out of the mean (0.0 if no request is left).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

GAINS = ("linear", "exp", "binary")


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def _check_labels(labels, mask) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, np.float64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [B, n], got labels.shape={labels.shape}")
    valid = labels >= 0
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape:
            raise ValueError(f"mask.shape={mask.shape} does not match labels.shape={labels.shape}")
        valid &= mask > 0
    return labels, valid


def _check_scores(name: str, scores, labels: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.shape != labels.shape:
        raise ValueError(f"{name}.shape={scores.shape} does not match labels.shape={labels.shape}")
    return scores


def _order(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per row, indices by score descending (ties → lower index), disallowed items last."""
    idx = np.broadcast_to(np.arange(scores.shape[-1]), scores.shape)
    return np.lexsort((idx, -scores, ~allowed), axis=-1)


def _top(scores: np.ndarray, allowed: np.ndarray, q: int) -> np.ndarray:
    """``[B, n]`` bool: each row's top-q allowed items."""
    order = _order(scores, allowed)[:, :q]
    out = np.zeros(allowed.shape, bool)
    np.put_along_axis(out, order, True, axis=-1)
    return out & allowed


def _mean(values: np.ndarray, keep: np.ndarray) -> float:
    return float(values[keep].mean()) if keep.any() else 0.0


def ground_truth(labels, k: int = 10, mask=None) -> np.ndarray:
    """``[B, n]`` bool: the hard top-k of the labels among valid items (ties → lower index)."""
    labels, valid = _check_labels(labels, mask)
    return _top(labels, valid, _check_positive("k", k))


def _recall(kept: np.ndarray, gt: np.ndarray) -> float:
    n_gt = gt.sum(-1)
    return _mean((kept & gt).sum(-1) / np.maximum(n_gt, 1), n_gt > 0)


def stage_recall(labels, scores, k: int = 10, q: int = 20, mask=None) -> float:
    """Mean Recall@k@q of one stage alone on the whole valid list.

    Args:
      labels: ``[B, n]`` graded labels, −1 = padding.
      scores: ``[B, n]`` the stage's scores.
      k: ground-truth size K.
      q: how many items the stage keeps.
      mask: optional ``[B, n]`` validity.

    Returns:
      The mean over requests with at least one valid item.
    """
    labels, valid = _check_labels(labels, mask)
    scores = _check_scores("scores", scores, labels)
    gt = _top(labels, valid, _check_positive("k", k))
    return _recall(_top(scores, valid, _check_positive("q", q)), gt)


def joint_recall(labels, stage_scores: Sequence, k: int = 10, qs: Sequence[int] = (30, 20), mask=None) -> float:
    """Mean Joint Recall@k@q_T of the hard cascade ``stage_scores`` (earliest stage first).

    Args:
      labels: ``[B, n]`` graded labels, −1 = padding.
      stage_scores: S arrays ``[B, n]`` (or one ``[B, S, n]`` array), retrieval first.
      k: ground-truth size K.
      qs: S positive, non-increasing cuts q_1 ≥ … ≥ q_S.
      mask: optional ``[B, n]`` validity.

    Returns:
      The mean over requests with at least one valid item.
    """
    labels, valid = _check_labels(labels, mask)
    if isinstance(stage_scores, np.ndarray) and stage_scores.ndim == 3:
        stage_scores = [stage_scores[:, t] for t in range(stage_scores.shape[1])]
    if len(stage_scores) != len(qs) or not len(qs):
        raise ValueError(f"need one q per stage: got {len(stage_scores)} stage scores and qs={list(qs)}")
    qs = [_check_positive("qs", q) for q in qs]
    if any(a < b for a, b in zip(qs, qs[1:])):
        raise ValueError(f"qs must be non-increasing, got qs={qs}")
    kept = valid
    for t, (scores, q) in enumerate(zip(stage_scores, qs)):
        kept = _top(_check_scores(f"stage_scores[{t}]", scores, labels), kept, q)
    return _recall(kept, _top(labels, valid, _check_positive("k", k)))


def gains(labels: np.ndarray, gt: np.ndarray, gain: str) -> np.ndarray:
    """The NDCG gain of every item (0 where invalid is up to the caller)."""
    if gain == "linear":
        return np.maximum(labels, 0.0)
    if gain == "exp":
        return np.exp2(np.maximum(labels, 0.0)) - 1.0
    if gain == "binary":
        return gt.astype(np.float64)
    raise ValueError(f"gain must be one of {GAINS}, got gain={gain!r}")


def expected_recall(labels, scores, k: int = 10, q: int = 20, mask=None) -> float:
    """Mean Recall@k@q of one ranking whose score ties are broken uniformly at random, in expectation.

    Per request, the valid items scoring above the q-th largest valid score s_(q) are kept; of the
    m valid items tied at s_(q), the r = q − #{s > s_(q)} still to keep are a uniform draw, so each
    is kept with probability r / m (all items are kept when there are at most q):

        E[Recall@k@q] = Σ_{i ∈ CS_gt} P(i kept) / |CS_gt|.

    A cascade whose every stage ranks by the same scores (ties broken by one shared random order)
    keeps the top-q_T of them, so this at q = q_T is its expected Joint Recall@k@q_T. Constant
    scores give a uniformly random cascade: min(q, n) / n per request with n valid items. These
    are the naive rankers the pipeline's blessing compares a trained cascade with.

    Args:
      labels: ``[B, n]`` graded labels, −1 = padding.
      scores: ``[B, n]`` the ranking's scores (constant for a random order).
      k: ground-truth size K.
      q: how many items are kept (q_T for a cascade).
      mask: optional ``[B, n]`` validity.

    Returns:
      The mean over requests with at least one valid item.
    """
    labels, valid = _check_labels(labels, mask)
    scores = _check_scores("scores", scores, labels)
    gt = _top(labels, valid, _check_positive("k", k))
    q = _check_positive("q", q)
    if np.isnan(scores[valid]).any():
        raise ValueError("scores contain NaN at valid items")
    if labels.shape[-1] <= q:
        kept = valid.astype(np.float64)
    else:
        ranked = -np.sort(np.where(valid, -scores, np.inf), axis=-1)  # valid scores descending
        cut = ranked[:, q - 1:q]  # s_(q); -inf where a row has fewer than q valid items
        above = valid & (scores > cut)
        tied = valid & (scores == cut)
        to_keep = q - above.sum(-1, keepdims=True)
        share = to_keep / np.maximum(tied.sum(-1, keepdims=True), 1)
        kept = np.where(valid.sum(-1, keepdims=True) <= q, valid, above + tied * share)
    n_gt = gt.sum(-1)
    return _mean((kept * gt).sum(-1) / np.maximum(n_gt, 1), n_gt > 0)


def ndcg(labels, scores, k: int = 10, mask=None, gain: str = "linear") -> float:
    """Mean NDCG@k of one stage's ranking of the valid items.

    Args:
      labels: ``[B, n]`` graded labels, −1 = padding.
      scores: ``[B, n]`` the stage's scores.
      k: cut-off (and ground-truth size for ``gain="binary"``).
      mask: optional ``[B, n]`` validity.
      gain: ``"linear"`` (label), ``"exp"`` (2^label − 1) or ``"binary"`` ([item ∈ CS_gt]).

    Returns:
      The mean over requests with IDCG > 0.
    """
    labels, valid = _check_labels(labels, mask)
    scores = _check_scores("scores", scores, labels)
    k = _check_positive("k", k)
    g = np.where(valid, gains(labels, _top(labels, valid, k), gain), 0.0)
    cut = min(k, labels.shape[-1])
    discounts = 1.0 / np.log2(np.arange(2, cut + 2))
    dcg = (np.take_along_axis(g, _order(scores, valid)[:, :cut], axis=-1) * discounts).sum(-1)
    idcg = (-np.sort(-g, axis=-1)[:, :cut] * discounts).sum(-1)
    return _mean(dcg / np.where(idcg > 0, idcg, 1.0), idcg > 0)


def gauc(labels, scores, k: int = 10, mask=None) -> float:
    """Mean per-request ROC AUC of one stage: the ground truth CS_gt (top-k labels) against
    every other valid item of the same request ("group AUC").

        AUC_b = (#{(i, j): i ∈ CS_gt, j ∉ CS_gt, s_i > s_j} + ½ #{… s_i = s_j}) / (|CS_gt| · |rest|)

    Args:
      labels: ``[B, n]`` graded labels, −1 = padding.
      scores: ``[B, n]`` the stage's scores.
      k: ground-truth size K.
      mask: optional ``[B, n]`` validity.

    Returns:
      The mean over requests with at least one positive and one negative.
    """
    labels, valid = _check_labels(labels, mask)
    scores = _check_scores("scores", scores, labels)
    k = _check_positive("k", k)
    if np.isnan(scores[valid]).any():
        raise ValueError("scores contain NaN at valid items")
    gt = _top(labels, valid, k)
    neg = valid & ~gt
    # CS_gt has at most k items: compare their scores [B, k] with every item's [B, n].
    slots = np.argsort(~gt, axis=-1, kind="stable")[:, :k]
    pos = np.take_along_axis(gt, slots, -1)
    s_pos = np.take_along_axis(scores, slots, -1)[:, :, None]
    wins = ((s_pos > scores[:, None, :]) + 0.5 * (s_pos == scores[:, None, :])) * (pos[:, :, None] & neg[:, None, :])
    n_pos, n_neg = gt.sum(-1), neg.sum(-1)
    keep = (n_pos > 0) & (n_neg > 0)
    return _mean(wins.sum((1, 2)) / np.maximum(n_pos * n_neg, 1), keep)
