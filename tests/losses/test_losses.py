"""The cascade losses against an independent float64 numpy re-computation of their reference
constructions, in value and in gradient.

The references are the official PyTorch code of LCRON (kwai/LCRON, ``deep_components/loss``:
LCRON, ARF, ARF-v2, BCE, ICC, RankFlow, FS-RankNet, FS-LambdaLoss) and of DFTopK
(zhangzhen97/DFTOPK, ``topk_loss.py``: ``dftopkjoint``, ``lapsumjoint``). The numpy below is
written from those constructions, in their terms (the label permutation is NeuralSort of the
labels at τ = 1e-4, thresholded at 0.001 or not; s2 masks; means over list slots and the batch;
the ``count > m`` guards; the 1e-6 epsilons; ICC's upper-triangular pair mask over the list
laid out by stage sample; ...), never from tfcascade's code, and neither torch nor the
reference code is imported (``bench/loss_reference.py`` runs the official functions).

Inputs follow the reference's data layout: per request, 10 slots per stage sample, the ground
truth labelled 30 − rank_index (distinct values), the negative samples in tied blocks (two
stages: 7 / 6 / 5, three stages: 8 / 7 / 6 / 5), n = 40 / 50. Our lists are shuffled; each
numpy reference first lays a request out as the reference's loader does (ground truth first,
then the negative blocks by label, items of a block in list order). Every numpy reference is a
function ``f(labels, scores, frozen)``: the parts the reference detaches (NeuralSort column
sums, LambdaLoss weights and ranks, RankFlow's selections, the index that ICC's κ and DFTopK's
θ gather) are computed from ``frozen``, so a central finite difference of ``f`` in ``scores``
with ``frozen`` held at the unperturbed point is the gradient autodiff must give.

Padding is where tfcascade deliberately departs from the reference (which sorts padded slots
with the valid ones): padded items are left out of every sort and selection, and the means over
list slots keep the padded width. The numpy references therefore drop padded items and divide
by the padded width where the reference averages over slots; ``test_padding_*`` check the same
semantics directly (a padded list equals the compacted list, scaled).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfcascade._keras import keras
from tfcascade.losses.registry import get, loss_class, names
from tfcascade.losses.uncertainty import UncertaintyWeighting

SLOTS = 10  # items per stage sample, as the reference's loader
K = 10  # ground-truth size (gt_num)
NEGATIVE_LABELS = {2: (7.0, 6.0, 5.0), 3: (8.0, 7.0, 6.0, 5.0)}
EPS = 1e-6  # the reference's guard inside every log and denominator

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def reference_labels(stages: int, batch: int, rng, shuffle: bool = True) -> np.ndarray:
    """``[B, n]`` labels in the reference encoding; each list shuffled unless ``shuffle=False``."""
    rows = []
    for _ in range(batch):
        row = np.concatenate([30.0 - rng.permutation(SLOTS)]
                             + [np.full(SLOTS, v) for v in NEGATIVE_LABELS[stages]])
        rows.append(row[rng.permutation(row.size)] if shuffle else row)
    return np.stack(rows)


def random_scores(stages: int, shape, rng, scale: float = 1.5) -> list[np.ndarray]:
    return [rng.normal(0.0, scale, shape) for _ in range(stages)]


def tie_scores(scores: list[np.ndarray], labels: np.ndarray, ranks=(9, 19, 29, 39)) -> list[np.ndarray]:
    """Ties at the selection boundaries: per list and stage, the item at 0-based rank r + 1
    (among valid items, by score) gets the score of the item at rank r, for each r in ``ranks``
    (the k / k + 1 boundary of DFTopK, the q-th largest of ICC's κ and RankFlow's top-q sets)."""
    out = []
    for s in scores:
        s = s.copy()
        for b in range(s.shape[0]):
            valid = np.flatnonzero(labels[b] >= 0)
            order = valid[np.argsort(-s[b, valid], kind="stable")]
            for r in ranks:
                if r + 1 < order.size:
                    s[b, order[r + 1]] = s[b, order[r]]
        out.append(s)
    return out


def pad(labels: np.ndarray, scores: list[np.ndarray], drop: dict[int, int], rng):
    """Marks ``drop[b]`` negative items of list b as padding (label −1, garbage scores)."""
    labels = labels.copy()
    scores = [s.copy() for s in scores]
    for b, count in drop.items():
        negatives = np.flatnonzero(labels[b] < 20)
        chosen = rng.choice(negatives, size=count, replace=False)
        labels[b, chosen] = -1.0
        for s in scores:
            s[b, chosen] = rng.normal(0.0, 50.0, count)  # must not matter
    return labels, scores


# ---------------------------------------------------------------------------------------------
# numpy building blocks (float64). Scores may carry leading axes ([..., n]): the finite
# differences evaluate every perturbed point at once.
# ---------------------------------------------------------------------------------------------


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_logits(z, y):
    """PyTorch's ``binary_cross_entropy_with_logits``: max(z, 0) − z·y + log(1 + e^{−|z|})."""
    return np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))


def bce_probabilities(p, y):
    """PyTorch's ``BCELoss``: each log clamped at −100."""
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100.0) + (1.0 - y) * np.maximum(np.log(1.0 - p), -100.0))


def softmax_last(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def neuralsort(s: np.ndarray, tau: float) -> np.ndarray:
    """NeuralSort (Grover et al. 2019) of lists ``[..., n]``, rows = ranks 1..n (descending):
    P[r − 1] = softmax(((n + 1 − 2r)·s − A·1) / τ),  (A·1)_j = Σ_i |s_j − s_i|."""
    n = s.shape[-1]
    spread = np.abs(s[..., :, None] - s[..., None, :]).sum(axis=-1)
    coef = n + 1.0 - 2.0 * np.arange(1, n + 1)
    return softmax_last((coef[:, None] * s[..., None, :] - spread[..., None, :]) / tau)


def softsort(s: np.ndarray, tau: float, frozen: np.ndarray) -> np.ndarray:
    """SoftSort (Prillo & Eisenschlos 2020) as the reference's ``soft_sort``:
    P[r] = softmax(−|sort(s)_r − s| / τ), sorted descending (the sorted values are the scores
    taken in the frozen order: torch.sort's values carry the gradient to their items)."""
    ranked = s[..., np.argsort(-frozen, kind="stable")]
    return softmax_last(-np.abs(ranked[..., :, None] - s[..., None, :]) / tau)


@functools.lru_cache(maxsize=4096)
def _column_sums(key: bytes, tau: float, sort: str) -> np.ndarray:
    s = np.frombuffer(key)
    return (neuralsort(s, tau) if sort == "neural" else softsort(s, tau, s)).sum(axis=-2)


def detached_column_sums(frozen: np.ndarray, tau: float, sort: str = "neural") -> np.ndarray:
    """sg(Σ_r P[r, j]) at the frozen scores (cached: every finite difference asks again)."""
    return _column_sums(np.ascontiguousarray(frozen, np.float64).tobytes(), tau, sort)


@functools.lru_cache(maxsize=1024)
def _label_permutation(key: bytes, thresholded: bool) -> np.ndarray:
    perm = neuralsort(np.frombuffer(key), 1e-4)
    return (perm > 0.001).astype(np.float64) if thresholded else perm


def label_permutation(y: np.ndarray, thresholded: bool) -> np.ndarray:
    """The reference's label matrix: NeuralSort of the labels at τ = 1e-4, (> 0.001) if asked."""
    return _label_permutation(np.ascontiguousarray(y, np.float64).tobytes(), thresholded)


def top_indices(values: np.ndarray, q: int, pos: np.ndarray, allowed=None) -> np.ndarray:
    """Indices of the q largest ``values`` (among ``allowed``), ties → lower list position."""
    cand = np.arange(values.size) if allowed is None else np.flatnonzero(allowed)
    return cand[np.lexsort((pos[cand], -values[cand]))][:q]


def member(indices, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[indices] = 1.0
    return out


class Request(NamedTuple):
    y: np.ndarray  # labels of the valid items, laid out as the reference's loader
    gt: np.ndarray  # 1 on the ground truth (top-k labels, ties → lower list position)
    category: np.ndarray  # 0 = ground truth, 1, 2, ... = negative blocks by label, descending
    pos: np.ndarray  # positions in our list (for tie-breaking)
    s: list  # per stage, the scores [..., n_valid]
    f: list  # per stage, the frozen scores [n_valid]


def requests(labels, scores, frozen, k: int = K) -> list[Request]:
    """Per list, its valid items in the reference's layout: the ground truth first, then the
    negative blocks by label, descending; inside a block, list order."""
    out = []
    for b in range(labels.shape[0]):
        pos = np.flatnonzero(labels[b] >= 0)
        y = labels[b, pos]
        gt = member(np.lexsort((pos, -y))[:k], y.size)
        negatives = np.unique(y[gt == 0])[::-1]
        category = np.where(gt > 0, 0, 1 + np.searchsorted(-negatives, -y))
        order = np.lexsort((pos, category))
        out.append(Request(y[order], gt[order], category[order], pos[order],
                           [s[..., b, pos[order]] for s in scores], [f[b, pos[order]] for f in frozen]))
    return out


def qs_default(stages):
    return (30, 20) if stages == 2 else (40, 30, 20)


def contributions(scores, batch):
    """Zeros for the per-list contributions, ``[..., B]``."""
    return np.zeros(scores[0].shape[:-2] + (batch,))


# ---------------------------------------------------------------------------------------------
# The reference constructions, in numpy. Each returns the per-list contributions [..., B] (the
# loss is their sum: no batch normaliser depends on the scores), so that one evaluation gives
# every list's finite difference.
# ---------------------------------------------------------------------------------------------


def ref_bce(labels, scores, frozen=None, k=K, reached_labels=None):
    """LCRON's BCE baseline: per stage, BCE-with-logits of the stage's logits against
    [ground truth] over the slots of the sample categories that reached the stage (two stages:
    ranking on rank_pos + rank_neg, retrieval on all; three: ranking on rerank_pos + rerank_neg,
    pre-ranking on the first four categories, retrieval on all), mean over those items.
    ``reached_labels`` selects by label threshold instead (tfcascade's option)."""
    stages = len(scores)
    reached_blocks = (4, 2) if stages == 2 else (5, 4, 2)
    reqs = requests(labels, scores, scores if frozen is None else frozen, k)
    out = contributions(scores, len(reqs))
    for t in range(stages):
        use = [r.y >= reached_labels[t] if reached_labels is not None else r.category < reached_blocks[t]
               for r in reqs]
        count = sum(u.sum() for u in use)
        for b, (r, u) in enumerate(zip(reqs, use)):
            out[..., b] += bce_logits(r.s[t][..., u], r.gt[u]).sum(axis=-1) / count
    return out


def ref_icc(labels, scores, frozen=None, k=K, width=1e-3, kappa_qs=None, ensemble_weights=None):
    """ICC as LCRON's code: I_t = σ((s_t − κ_t)/σ), κ_t = s_t gathered at the index of the
    q_t-th largest; ensemble (1 − I_0)s_0 + I_0·I_1·s_1 (two stages) or (1 − I_0)s_0 +
    2·I_0(1 − I_1)s_1 + 4·I_0·I_1·I_2·s_2 (three); pairwise BCE-with-logits of e_i − e_j
    against [y_i > y_j] on the upper triangle of the list as laid out by stage sample, mean over
    the n² slots and the batch."""
    frozen = scores if frozen is None else frozen
    stages = len(scores)
    n_slots = labels.shape[1]
    kappa_qs = kappa_qs or ((30, 30) if stages == 2 else (40, 30, 30))
    weights = ensemble_weights or ((1.0, 1.0) if stages == 2 else (1.0, 2.0, 4.0))
    reqs = requests(labels, scores, frozen, k)
    out = contributions(scores, len(reqs))
    for b, r in enumerate(reqs):
        n = r.y.size
        ensemble, survive = 0.0, 1.0
        for t in range(stages):
            if n >= kappa_qs[t]:
                at = top_indices(r.f[t], kappa_qs[t], r.pos)[-1]  # the gathered index (no gradient)
                kappa = r.s[t][..., at, None]
            else:  # fewer valid items than q (padding): tfcascade's κ = −1e9, everyone is inside
                kappa = -1e9
            inside = sigmoid((r.s[t] - kappa) / width)
            share = inside if t == stages - 1 else 1.0 - inside
            ensemble = ensemble + weights[t] * survive * share * r.s[t]
            survive = survive * inside
        target = (r.y[:, None] > r.y[None, :]).astype(float)
        pair = bce_logits(ensemble[..., :, None] - ensemble[..., None, :], target)
        out[..., b] = (pair * np.triu(np.ones((n, n)), 1)).sum(axis=(-2, -1)) / n_slots**2 / len(reqs)
    return out


def ref_rankflow(labels, scores, frozen=None, k=K, stage_qs=None, pairwise_weight=None,
                 distill_weight=1.0, pairwise_top=None):
    """RankFlow as LCRON's code: BCE of the retrieval logits on all items; then per later stage t,
    on the set S_{t−1} the cascade passes on (S_0 = top q_0 of retrieval, S_t = stage t's top q_t
    of S_{t−1}; no gradient through the choice): BCE of s_t, α_d·MSE(sg(s_t), s_{t−1}) and
    α_p·(−log σ(mean s_{t−1} over stage t's top p of S_{t−1} − mean s_{t−1} over the rest of
    S_{t−1})). Reference: two stages α_p = α, α_d = 1 − α, p = 10; three stages α = 1, p = 30, 20."""
    frozen = scores if frozen is None else frozen
    stages = len(scores)
    qs = stage_qs or qs_default(stages)
    alpha_p = (0.0 if stages == 2 else 1.0) if pairwise_weight is None else pairwise_weight
    tops = pairwise_top or ((10,) if stages == 2 else (30, 20))
    reqs = requests(labels, scores, frozen, k)
    out = contributions(scores, len(reqs))
    count = sum(r.y.size for r in reqs)
    for b, r in enumerate(reqs):
        out[..., b] += bce_logits(r.s[0], r.gt).sum(axis=-1) / count
    passed = []
    for r in reqs:
        sets = [top_indices(r.f[0], qs[0], r.pos)]
        for t in range(1, stages):
            sets.append(top_indices(r.f[t], qs[t], r.pos, member(sets[-1], r.y.size)))
        passed.append(sets)
    for t in range(1, stages):
        count = sum(sets[t - 1].size for sets in passed)
        for b, (r, sets) in enumerate(zip(reqs, passed)):
            kept = sets[t - 1]
            out[..., b] += bce_logits(r.s[t][..., kept], r.gt[kept]).sum(axis=-1) / count
            out[..., b] += distill_weight * ((r.f[t][kept] - r.s[t - 1][..., kept]) ** 2).sum(axis=-1) / count
            best = top_indices(r.f[t], tops[t - 1], r.pos, member(kept, r.y.size))
            rest = np.setdiff1d(kept, best)
            gap = r.s[t - 1][..., best].mean(axis=-1) - r.s[t - 1][..., rest].mean(axis=-1)
            out[..., b] += alpha_p * softplus(-gap) / len(reqs)  # −log σ(gap)
    return out


def ref_fs_ranknet(labels, scores, frozen=None, k=K):
    """FS-RankNet as LCRON's code: per stage, for every sample category c but the last (ground
    truth, then the negative blocks), BCE-with-logits(s_i − s_j, 1) summed over i ∈ c and j in
    the categories after c, over the batch, divided by the number of those pairs (the
    reference's (#slots after c)·Σ_b |c|); summed over categories and stages."""
    reqs = requests(labels, scores, scores if frozen is None else frozen, k)
    keys = [np.where(r.gt > 0, np.inf, r.y) for r in reqs]  # the category of each item
    winners = sorted(set(np.concatenate(keys)), reverse=True)[:-1]
    pairs = {c: [(key == c)[:, None] & (key < c)[None, :] for key in keys] for c in winners}
    weight = [sum(pairs[c][b] / sum(p.sum() for p in pairs[c]) for c in winners) for b in range(len(reqs))]
    out = contributions(scores, len(reqs))
    for t in range(len(scores)):
        for b, r in enumerate(reqs):
            pair_loss = bce_logits(r.s[t][..., :, None] - r.s[t][..., None, :], 1.0)
            out[..., b] += (pair_loss * weight[b]).sum(axis=(-2, -1))
    return out


def ref_lambdaloss(labels, scores, frozen=None, topn=30, smooth_fraction=0.8, idcg_topn=None):
    """FS-LambdaLoss as LCRON's ``compute_lambda_loss``, per stage: ranks by score (no gradient),
    gain = label / IDCG, IDCG = Σ_r label_(r) / ln(1 + r) over the ideal order; pair discount
    u = |D(|Δr|) − D(|Δr| + 1)| (pairs with a rank ≤ topn), v = |D̄(r_i) − D̄(r_j)| with D̄ cut at
    topn, (1 − f)·u + f·v (u alone for f ≤ 0.001); weight |Δgain|·discount (no gradient);
    BCE-with-logits of s_i − s_j against [y_i > y_j] over every ordered pair (i, j), weighted,
    summed per list, mean over the batch; summed over stages."""
    frozen = scores if frozen is None else frozen

    def discount(r):
        return 1.0 / np.log(r + 1.0)

    reqs = requests(labels, scores, frozen, K)
    out = contributions(scores, len(reqs))
    for t in range(len(scores)):
        for b, r in enumerate(reqs):
            rank = np.empty(r.y.size)
            rank[top_indices(r.f[t], r.y.size, r.pos)] = np.arange(1, r.y.size + 1)
            ideal = np.sort(r.y)[::-1][:idcg_topn]
            idcg = (ideal * discount(np.arange(1, ideal.size + 1))).sum()
            gain = r.y / idcg if idcg > 0 else np.zeros_like(r.y)
            diff = np.abs(rank[:, None] - rank[None, :])
            near = (rank[:, None] <= topn) | (rank[None, :] <= topn)
            with np.errstate(divide="ignore"):
                u = np.where((diff > 0) & near, np.abs(discount(diff) - discount(diff + 1.0)), 0.0)
            if smooth_fraction > 0.001:
                cut = np.where(rank > topn, 0.0, discount(rank))
                v = np.abs(cut[:, None] - cut[None, :])
                pair_discount = (1.0 - smooth_fraction) * u + smooth_fraction * v
            else:
                pair_discount = u
            weight = np.abs(gain[:, None] - gain[None, :]) * pair_discount
            target = (r.y[:, None] > r.y[None, :]).astype(float)
            pair = bce_logits(r.s[t][..., :, None] - r.s[t][..., None, :], target)
            out[..., b] += (pair * weight).sum(axis=(-2, -1)) / len(reqs)
    return out


def ref_arf(labels, scores, frozen=None, k=K, variant="arf", temperature=200.0, m=None, global_size=None):
    """ARF / ARF-v2 as LCRON's code, per stage with support m_t (two stages 30 / 20, three
    40 / 30 / 20): P = NeuralSort(s, 200), L = NeuralSort(labels, 1e-4) unthresholded.
    ARF relax:    mean_slots −log(mean_{r<m} P[r] + 1e-6)·Σ_{r<k} L[r]
    ARF-v2 relax: mean_slots −log(Σ_{r<m} P[r]/(sg Σ_r P[r] + 1e-6) + 1e-6)·Σ_{r<k} L[r]
                           − log(Σ_{r≥m} P[r]/(sg Σ_r P[r] + 1e-6) + 1e-6)·Σ_{r≥k} L[r]
    both × [count > m]; global: mean_{r<G} mean_slots −log(P[r] + 1e-6)·L[r], × [count ≥ G];
    means over the batch; per stage ½·global + relax (learned weight 1)."""
    frozen = scores if frozen is None else frozen
    stages = len(scores)
    support = (m,) * stages if isinstance(m, int) else (m or qs_default(stages))
    n_slots = labels.shape[1]
    g = n_slots if global_size is None else global_size
    reqs = requests(labels, scores, frozen, k)
    out = contributions(scores, len(reqs))
    for b, r in enumerate(reqs):
        n = r.y.size
        lab = label_permutation(r.y, thresholded=False)
        up, down = lab[:k].sum(axis=0), lab[k:].sum(axis=0)
        for t in range(stages):
            perm = neuralsort(r.s[t], temperature)
            mt = support[t]
            if n > mt:
                if variant == "arf":
                    relax = -np.log(perm[..., :mt, :].mean(axis=-2) + EPS) * up
                else:
                    col = detached_column_sums(r.f[t], temperature) + EPS
                    relax = (-np.log(perm[..., :mt, :].sum(axis=-2) / col + EPS) * up
                             - np.log(perm[..., mt:, :].sum(axis=-2) / col + EPS) * down)
                out[..., b] += relax.sum(axis=-1) / n_slots
            if n >= g:
                out[..., b] += 0.5 * (-np.log(perm[..., :g, :] + EPS) * lab[:g]).sum(axis=-1).mean(axis=-1) / n_slots
    return out / len(reqs)


def ref_lcron(labels, scores, frozen=None, k=K, temperature=50.0, negatives="bottom_rows",
              block_labels=None, e2e_qs=None, single_q=None, sort="neural"):
    """LCRON as its code: P_t = NeuralSort(s_t, 50); top_t(q) = Σ_{r<q} P_t[r]/(sg Σ_r P_t[r] +
    1e-6), bottom_t(q) = Σ_{r≥q} P_t[r]/(same) (``one_minus_top``: 1 − top_t(q));
    L = NeuralSort(labels, 1e-4), thresholded at 0.001 for three stages ("count") and not for two
    ("mean"); u = Σ_{r<k} L[r], d = Σ_{r≥k} L[r];
    L_single,t = mean_b [count > m] mean_slots −log(top_t(m) + 1e-6)·u − log(bottom_t(m) + 1e-6)·d
    L_e2e = mean_b mean_slots −log(Π top_t(q_t) + 1e-6)·u − log(1 − Π(1 − bottom_t(q_t)) + 1e-6)·clip(1 − u)
    L = Σ_t ½·L_single,t + L_e2e (learned weights 1), m = q_t = k. ``sort="soft"``: SoftSort."""
    frozen = scores if frozen is None else frozen
    stages = len(scores)
    thresholded = (block_labels or ("mean" if stages == 2 else "count")) == "count"
    qs = e2e_qs or (k,) * stages
    m = single_q or k
    n_slots = labels.shape[1]
    reqs = requests(labels, scores, frozen, k)
    out = contributions(scores, len(reqs))
    for b, r in enumerate(reqs):
        lab = label_permutation(r.y, thresholded)
        up, down = lab[:k].sum(axis=0), lab[k:].sum(axis=0)
        joint_up = joint_down = 1.0
        for t in range(stages):
            perm = neuralsort(r.s[t], temperature) if sort == "neural" else softsort(r.s[t], temperature, r.f[t])
            col = detached_column_sums(r.f[t], temperature, sort) + EPS

            def top(q, perm=perm, col=col):
                return perm[..., :q, :].sum(axis=-2) / col

            def bottom(q, perm=perm, col=col):
                return 1.0 - top(q) if negatives == "one_minus_top" else perm[..., q:, :].sum(axis=-2) / col

            if r.y.size > m:
                single = -np.log(top(m) + EPS) * up - np.log(bottom(m) + EPS) * down
                out[..., b] += 0.5 * single.sum(axis=-1) / n_slots
            joint_up = joint_up * top(qs[t])
            joint_down = joint_down * (1.0 - bottom(qs[t]))
        negative = np.clip(1.0 - up, 0.0, 1.0)
        e2e = -np.log(joint_up + EPS) * up - np.log(1.0 - joint_down + EPS) * negative
        out[..., b] += e2e.sum(axis=-1) / n_slots
    return out / len(reqs)


def ref_dftopk(labels, scores, frozen=None, k=K, temperature=1.0):
    """DFTopK's ``dftopkjoint``: z_t = (s_t − (s_[k] + s_[k+1])/2)/τ (the two order statistics
    gathered at their indices), y = top-k labels; L_single,t = mean BCE-with-logits(z_t, y),
    L_e2e = mean BCELoss(Π_t σ(z_t), y); L = Σ_t ½·L_single,t + L_e2e. Three stages: the same
    with a third factor and single term."""
    frozen = scores if frozen is None else frozen
    reqs = requests(labels, scores, frozen, k)
    count = sum(r.y.size for r in reqs)
    out = contributions(scores, len(reqs))
    for b, r in enumerate(reqs):
        joint = 1.0
        for t in range(len(scores)):
            first, second = top_indices(r.f[t], k + 1, r.pos)[k - 1:]
            z = (r.s[t] - (r.s[t][..., first, None] + r.s[t][..., second, None]) / 2.0) / temperature
            out[..., b] += 0.5 * bce_logits(z, r.gt).sum(axis=-1) / count
            joint = joint * sigmoid(z)
        out[..., b] += bce_probabilities(joint, r.gt).sum(axis=-1) / count
    return out


def lapsum_membership(s: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """LapSum soft top-k of lists ``[..., n]``: p_i = F(s_i/α − b), F the Laplace CDF, b per
    list such that Σ p = k (bisection, then Newton)."""
    def cdf(z):
        return np.where(z <= 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(z, 0.0)))

    x = s / alpha
    lo, hi = x.min(axis=-1, keepdims=True) - 40.0, x.max(axis=-1, keepdims=True) + 40.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        above = cdf(x - mid).sum(axis=-1, keepdims=True) > k
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    b = 0.5 * (lo + hi)
    for _ in range(3):
        slope = (0.5 * np.exp(-np.abs(x - b))).sum(axis=-1, keepdims=True)
        b = b + (cdf(x - b).sum(axis=-1, keepdims=True) - k) / slope
    p = cdf(x - b)
    assert np.abs(p.sum(axis=-1) - k).max() < 1e-11
    return p


def ref_lapsum(labels, scores, frozen=None, k=K, temperature=5.0):
    """DFTopK's ``lapsumjoint``: m_t = LapSum(s_t, k, α = 5); BCE −[y log(m + 1e-6) +
    (1 − y) log(1 − m + 1e-6)], mean; L = Σ_t ½·BCE(m_t) + BCE(Π_t m_t)."""
    reqs = requests(labels, scores, scores if frozen is None else frozen, k)
    count = sum(r.y.size for r in reqs)
    out = contributions(scores, len(reqs))

    def bce(p, y):
        return -(y * np.log(p + EPS) + (1.0 - y) * np.log(1.0 - p + EPS)).sum(axis=-1) / count

    for b, r in enumerate(reqs):
        probs = [lapsum_membership(s, k, temperature) for s in r.s]
        out[..., b] += 0.5 * sum(bce(p, r.gt) for p in probs) + bce(np.prod(probs, axis=0), r.gt)
    return out


REFERENCES = {
    "bce": ref_bce, "icc": ref_icc, "rankflow": ref_rankflow, "fs_ranknet": ref_fs_ranknet,
    "fs_lambdaloss": ref_lambdaloss, "arf": ref_arf,
    "arf_v2": lambda *a, **kw: ref_arf(*a, variant="arf_v2", **kw),
    "lcron": ref_lcron, "dftopk": ref_dftopk, "lapsum": ref_lapsum,
}

# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------


def tf_value_and_grads(loss, labels, scores, mask=None):
    xs = [tf.constant(s, tf.float64) for s in scores]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        value = loss(tf.constant(labels, tf.float64), xs,
                     mask=None if mask is None else tf.constant(mask))
    grads = tape.gradient(value, xs)
    return float(value), [np.zeros_like(s) if g is None else g.numpy() for s, g in zip(scores, grads)]


def finite_difference(f, scores, h=1e-6):
    """Central differences of every list's contribution f(scores)[..., b] in each position of
    each stage: all 2·S·n perturbed points in one evaluation (leading axis), each perturbing one
    position of one stage in every list at once (list b's contribution depends on list b only)."""
    stages, (batch, n) = len(scores), scores[0].shape
    steps = np.zeros((stages, n, 2, stages, batch, n))
    for t in range(stages):
        for i in range(n):
            steps[t, i, 0, t, :, i] = h
            steps[t, i, 1, t, :, i] = -h
    steps = steps.reshape(-1, stages, batch, n)
    out = f([s[None] + steps[:, t] for t, s in enumerate(scores)]).reshape(stages, n, 2, batch)
    diff = (out[:, :, 0] - out[:, :, 1]) / (2.0 * h)  # [S, n, B]
    return [diff[t].T for t in range(stages)]


def assert_grads_close(got, want, rtol=1e-5, atol=1e-8):
    for t, (g, w) in enumerate(zip(got, want)):
        scale = max(np.abs(w).max(), 1.0)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"gradient wrt stage {t} scores")


def check_against_reference(name, stages, labels, scores, options=None, ref_options=None,
                            h=1e-6, mask=None, grad=True):
    """tfcascade's loss (float64) against the numpy reference: value, and gradient against the
    reference's central finite differences with the detached parts frozen."""
    options = options or {}
    ref_options = dict(options) if ref_options is None else ref_options
    loss = get(name, stages=stages, **options)
    value, grads = tf_value_and_grads(loss, labels, scores, mask)
    ref = REFERENCES[name]
    want = ref(labels, scores, scores, **ref_options).sum()
    assert value == pytest.approx(want, rel=1e-9, abs=1e-12), f"{name}: value {value} != reference {want}"
    if grad:
        numeric = finite_difference(lambda s: ref(labels, s, scores, **ref_options), scores, h)
        assert_grads_close(grads, numeric)
    return value, grads, loss


def reference_batch(stages, seed, batch=3, shuffle=True):
    rng = np.random.default_rng(seed)
    labels = reference_labels(stages, batch, rng, shuffle)
    return labels, random_scores(stages, labels.shape, rng)


# The finite-difference step: ICC's indicators have width 1e-3.
H = {"icc": 1e-7}
NAMES = ["bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2", "lcron", "dftopk",
         "lapsum"]

# ---------------------------------------------------------------------------------------------
# Every loss, two and three stages: value and gradient against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_on_shuffled_full_lists(name, stages):
    labels, scores = reference_batch(stages, seed=10 * stages + NAMES.index(name))
    check_against_reference(name, stages, labels, scores, h=H.get(name, 1e-6))


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_with_tied_scores(name, stages):
    """Ties in the scores at the k-th / q-th largest boundaries (DFTopK's θ, ICC's κ, RankFlow's
    sets, LambdaLoss's ranks; ties → lower list position, as tf.math.top_k)."""
    labels, scores = reference_batch(stages, seed=100 + 10 * stages + NAMES.index(name))
    check_against_reference(name, stages, labels, tie_scores(scores, labels), h=H.get(name, 1e-6))


@pytest.mark.parametrize("drop", [{0: 3, 2: 5}, {1: 12}], ids=["light", "heavy"])
@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_on_padded_lists(name, stages, drop):
    """Lists with padding (interleaved, different amounts) against the reference construction
    on their valid items, with the means over list slots kept at the padded width. "heavy"
    leaves a list with fewer valid items than q_0 (ARF's ``count > m`` and ``count ≥ G`` guards
    off for some stages, ICC's κ = −1e9, RankFlow's S_0 = every item)."""
    rng = np.random.default_rng(200 + 10 * stages + NAMES.index(name))
    labels = reference_labels(stages, 3, rng)
    labels, scores = pad(labels, random_scores(stages, labels.shape, rng), drop, rng)
    check_against_reference(name, stages, labels, scores, h=H.get(name, 1e-6))


@pytest.mark.parametrize("stages", [2, 3])
def test_icc_on_the_reference_layout_unshuffled(stages):
    """ICC in the reference's own item order (the order within a tie block matters there)."""
    labels, scores = reference_batch(stages, seed=300 + stages, shuffle=False)
    check_against_reference("icc", stages, labels, scores, h=1e-7)


# ---------------------------------------------------------------------------------------------
# Options, against the reference construction with the same settings
# ---------------------------------------------------------------------------------------------

OPTION_CASES = [
    # LCRON: the paper's negative form, the other block labels, the paper's e2e q's, a k whose
    # boundary cuts a tie block, the SoftSort variant, another temperature.
    ("lcron", 2, {"negatives": "one_minus_top"}),
    ("lcron", 3, {"negatives": "one_minus_top"}),
    ("lcron", 2, {"block_labels": "count"}),
    ("lcron", 3, {"block_labels": "mean"}),
    ("lcron", 2, {"e2e_qs": (30, 20)}),
    ("lcron", 3, {"e2e_qs": (40, 30, 20), "temperature": 5.0}),
    ("lcron", 2, {"k": 15}),
    ("lcron", 3, {"k": 15, "block_labels": "mean"}),
    ("lcron", 2, {"sort": "soft", "temperature": 2.0}),
    ("lcron", 3, {"sort": "soft"}),
    # ARF / ARF-v2: one support for every stage, one per stage, a global size below n.
    ("arf", 2, {"m": 25}),
    ("arf", 3, {"m": (35, 25, 15), "global_size": 20}),
    ("arf_v2", 2, {"m": (35, 15), "global_size": 30}),
    ("arf_v2", 3, {"m": 22, "temperature": 20.0}),
    # FS-LambdaLoss: cut-off, smooth fraction (incl. the u-only end), the ideal DCG's ranks.
    ("fs_lambdaloss", 2, {"topn": 10}),
    ("fs_lambdaloss", 3, {"smooth_fraction": 0.0}),
    ("fs_lambdaloss", 2, {"smooth_fraction": 0.5, "idcg_topn": 30}),
    ("fs_lambdaloss", 3, {"topn": 45, "idcg_topn": 10}),
    # RankFlow: the reference's two-stage α form (α_p = α, α_d = 1 − α), other sets.
    ("rankflow", 2, {"pairwise_weight": 0.5, "distill_weight": 0.5}),
    ("rankflow", 2, {"pairwise_weight": 1.0, "pairwise_top": (5,), "stage_qs": (25, 10)}),
    ("rankflow", 3, {"pairwise_weight": 0.3, "distill_weight": 2.0, "pairwise_top": (25, 10)}),
    ("rankflow", 3, {"pairwise_weight": 0.0, "stage_qs": (45, 35, 20)}),
    # ICC: κ's q's, the ensemble's coefficients, a wider indicator.
    ("icc", 2, {"kappa_qs": (20, 10), "ensemble_weights": (2.0, 0.5)}),
    ("icc", 3, {"kappa_qs": (45, 25, 15), "ensemble_weights": (1.0, 1.0, 1.0)}),
    ("icc", 2, {"width": 0.3}),
    ("icc", 3, {"width": 0.5, "kappa_qs": (40, 30, 20)}),
    # BCE: which items each stage trains on.
    ("bce", 2, {"reached_labels": (5.0, 6.0)}),
    ("bce", 3, {"reached_labels": (0.0, 7.0, 21.0)}),
    # DFTopK / LapSum: temperatures, a k inside a tie block of labels (ties → lower position).
    ("dftopk", 2, {"temperature": 0.5}),
    ("dftopk", 3, {"k": 15, "temperature": 2.0}),
    ("lapsum", 2, {"temperature": 1.0}),
    ("lapsum", 3, {"k": 15}),
]

def _ref_options(name, options):
    """The numpy references take tfcascade's option names; ``stage_qs`` only matters to RankFlow's."""
    return {k: v for k, v in options.items() if k != "stage_qs" or name == "rankflow"}


@pytest.mark.parametrize("name,stages,options", OPTION_CASES,
                         ids=[f"{n}-{s}-{'-'.join(o)}" for n, s, o in OPTION_CASES])
def test_options_match_reference(name, stages, options):
    labels, scores = reference_batch(stages, seed=400 + OPTION_CASES.index((name, stages, options)))
    check_against_reference(name, stages, labels, scores, options, _ref_options(name, options),
                            h=H.get(name, 1e-6) if options.get("width", 1e-3) < 0.01 else 1e-6)


@pytest.mark.parametrize("stages", [2, 3])
def test_lcron_bottom_rows_and_one_minus_top_agree_in_value_not_in_gradient(stages):
    """The reference scores a negative through the bottom rows of P̂: its value is 1 − top up to
    the 1e-6 guards, its gradient is not (NeuralSort's column sums are not 1 and are detached)."""
    labels, scores = reference_batch(stages, seed=500 + stages)
    value_rows, grad_rows, _ = check_against_reference("lcron", stages, labels, scores)
    value_paper, grad_paper, _ = check_against_reference("lcron", stages, labels, scores,
                                                         {"negatives": "one_minus_top"})
    assert value_rows == pytest.approx(value_paper, rel=1e-4)
    for t, (a, b) in enumerate(zip(grad_rows, grad_paper)):
        assert np.abs(a - b).max() > 0.05 * np.abs(b).max(), f"stage {t}: the two forms' gradients coincide"


def test_fs_lambdaloss_tiny_smooth_fraction_uses_u_alone_as_the_reference():
    labels, scores = reference_batch(2, seed=450)
    check_against_reference("fs_lambdaloss", 2, labels, scores, {"smooth_fraction": 0.0005}, grad=False)


def test_arf_global_size_beyond_the_list_gives_no_global_term():
    labels, scores = reference_batch(2, seed=451)
    check_against_reference("arf", 2, labels, scores, {"global_size": 41}, grad=False)


@pytest.mark.parametrize("name", ["lcron", "arf", "arf_v2", "dftopk", "lapsum"])
def test_non_positive_temperature_is_refused_at_construction(name):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got temperature=0.0"):
        get(name, stages=2, temperature=0.0)


BAD_OPTIONS = [
    ("bce", {"stages": 4}, "stages must be 2 or 3, got stages=4"),
    ("bce", {"k": 0}, r"k needs positive integers, got k=\[0\]"),
    ("bce", {"k": 1.5}, r"k needs positive integers, got k=\[1.5\]"),
    ("bce", {"stage_qs": (30,)}, r"stage_qs needs 2 positive integers"),
    ("bce", {"stage_qs": (20, 30)}, r"stage_qs must be non-increasing, got stage_qs=\[20, 30\]"),
    ("bce", {"reached_labels": (0.0, 6.0, 7.0)}, r"reached_labels needs 2 values"),
    ("icc", {"width": 0.0}, r"width must be a finite number > 0, got width=0.0"),
    ("icc", {"kappa_qs": (30,)}, r"kappa_qs needs 2 positive integers"),
    ("icc", {"kappa_qs": (30, 0)}, r"kappa_qs needs 2 positive integers, got kappa_qs=\[30, 0\]"),
    ("icc", {"ensemble_weights": (1.0, 2.0, 4.0)}, r"ensemble_weights needs 2 values"),
    ("rankflow", {"pairwise_top": (10, 5)}, r"pairwise_top needs 1 values"),
    ("rankflow", {"pairwise_top": (30,)}, r"pairwise_top\[0\] must be in \[1, stage_qs\[0\]\)"),
    ("rankflow", {"pairwise_top": (0,)}, r"pairwise_top\[0\] must be in"),
    ("fs_lambdaloss", {"topn": 0}, "topn must be a positive integer, got topn=0"),
    ("fs_lambdaloss", {"smooth_fraction": 1.5}, r"smooth_fraction must be in \[0, 1\], got smooth_fraction=1.5"),
    ("fs_lambdaloss", {"idcg_topn": -3}, "idcg_topn must be a positive integer or None, got idcg_topn=-3"),
    ("arf", {"m": (30,)}, r"m needs 2 positive integers, got m=\[30\]"),
    ("arf_v2", {"m": 0}, r"m needs 2 positive integers, got m=\[0, 0\]"),
    ("arf", {"global_size": 0}, r"global_size needs positive integers, got global_size=\[0\]"),
    ("lcron", {"sort": "quick"}, "sort must be one of .*, got sort='quick'"),
    ("lcron", {"negatives": "paper"}, "negatives must be one of .*, got negatives='paper'"),
    ("lcron", {"block_labels": "sum"}, "block_labels must be one of .*, got block_labels='sum'"),
    ("lcron", {"e2e_qs": (10,)}, r"e2e_qs needs 2 positive integers"),
    ("dftopk", {"e2e_qs": (10, 10, 10)}, r"e2e_qs needs 2 positive integers"),
    ("dftopk", {"e2e_qs": (0, 0)}, r"e2e_qs needs 2 positive integers, got e2e_qs=\[0, 0\]"),
    ("lapsum", {"single_q": 0}, r"single_q needs positive integers, got single_q=\[0\]"),
    ("bce", {"temperature": 3.0}, "loss 'bce' has no temperature option"),
    ("icc", {"kappa": 3}, "bad options for loss 'icc'"),
]


@pytest.mark.parametrize("name,options,message", BAD_OPTIONS,
                         ids=[f"{n}-{'-'.join(o)}" for n, o, _ in BAD_OPTIONS])
def test_bad_options_raise_value_error_naming_the_option(name, options, message):
    options = dict(options)
    stages = options.pop("stages", 2)
    with pytest.raises(ValueError, match=message):
        get(name, stages=stages, **options)


# ---------------------------------------------------------------------------------------------
# Padding semantics (tfcascade's, not the reference's)
# ---------------------------------------------------------------------------------------------

# How a list's value scales when n_v valid items are padded to n slots: the means over list slots.
SLOT_POWER = {"lcron": 1, "arf": 1, "arf_v2": 1, "icc": 2}
# ARF's global term needs all G ranks filled: give it a G both lists have.
PADDING_OPTIONS = {"arf": {"global_size": 30}, "arf_v2": {"global_size": 30}}


def _padding_inserted(labels, scores, where, rng):
    """One list with padding slots inserted before the given positions."""
    n = labels.shape[1] + len(where)
    keep = np.ones(n, bool)
    keep[np.asarray(where) + np.arange(len(where))] = False
    out_labels = np.full((1, n), -1.0)
    out_labels[0, keep] = labels[0]
    out_scores = []
    for s in scores:
        x = rng.normal(0.0, 30.0, (1, n))
        x[0, keep] = s[0]
        out_scores.append(x)
    return out_labels, out_scores, keep


def _check_padding_equals_compacted(name, stages, labels, scores, where, seed):
    rng = np.random.default_rng(seed)
    padded_labels, padded_scores, keep = _padding_inserted(labels, scores, where, rng)
    loss = get(name, stages=stages, **PADDING_OPTIONS.get(name, {}))
    value, grads = tf_value_and_grads(loss, labels, scores)
    padded_value, padded_grads = tf_value_and_grads(loss, padded_labels, padded_scores)
    scale = (labels.shape[1] / padded_labels.shape[1]) ** SLOT_POWER.get(name, 0)
    assert padded_value == pytest.approx(scale * value, rel=1e-10, abs=1e-12)
    for g, pg in zip(grads, padded_grads):
        np.testing.assert_allclose(pg[0, keep], scale * g[0], rtol=1e-8, atol=1e-12)
        assert np.all(pg[0, ~keep] == 0.0)


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_padding_equals_the_compacted_list_scaled(name, stages):
    """A padded list gives the value and gradient of the same list without its padding (scaled
    by (n_valid / n)^p for the means over list slots: p = 1 for LCRON / ARF, 2 for ICC's n² pair
    slots, 0 for the means over items); padded items get no gradient."""
    rng = np.random.default_rng(600 + stages)
    labels = reference_labels(stages, 1, rng)
    scores = random_scores(stages, labels.shape, rng)
    _check_padding_equals_compacted(name, stages, labels, scores, [0, 7, 7, 23, labels.shape[1]], seed=1)


@pytest.mark.parametrize("name", NAMES)
def test_explicit_mask_equals_padding_labels(name):
    rng = np.random.default_rng(7)
    labels = reference_labels(3, 2, rng)
    mask = np.ones(labels.shape, bool)
    mask[1, np.flatnonzero(labels[1] < 20)[[0, 11, 29]]] = False
    scores = random_scores(3, labels.shape, rng)
    loss = get(name, stages=3, **PADDING_OPTIONS.get(name, {}))
    masked, masked_grads = tf_value_and_grads(loss, labels, scores, mask=mask)
    padded, padded_grads = tf_value_and_grads(loss, np.where(mask, labels, -1.0), scores)
    assert masked == pytest.approx(padded, rel=1e-12)
    for a, b in zip(masked_grads, padded_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------


def _block_order_kept(labels_row, perm):
    """``perm`` changed so that items of equal labels keep their relative order (ICC's tie
    blocks are ordered by list position)."""
    perm = perm.copy()
    new_labels = labels_row[perm]
    for value in np.unique(labels_row):
        slots = np.flatnonzero(new_labels == value)
        perm[slots] = np.sort(perm[slots])
    return perm


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), stages=st.sampled_from([2, 3]), seed=st.integers(0, 2**31 - 1))
def test_permuting_the_items_permutes_the_gradient_and_keeps_the_value(name, stages, seed):
    """Every loss is a function of the set of (label, scores) items; ICC also of the order of
    items of equal label, which the permutation keeps."""
    rng = np.random.default_rng(seed)
    labels = reference_labels(stages, 2, rng)
    labels[1, rng.choice(np.flatnonzero(labels[1] < 20), 3, replace=False)] = -1.0  # negatives only
    scores = random_scores(stages, labels.shape, rng)
    perms = [rng.permutation(labels.shape[1]) for _ in range(2)]
    if name == "icc":
        perms = [_block_order_kept(labels[b], p) for b, p in enumerate(perms)]
    shuffled_labels = np.stack([labels[b, p] for b, p in enumerate(perms)])
    shuffled_scores = [np.stack([s[b, p] for b, p in enumerate(perms)]) for s in scores]
    loss = get(name, stages=stages, **PADDING_OPTIONS.get(name, {}))
    value, grads = tf_value_and_grads(loss, labels, scores)
    shuffled_value, shuffled_grads = tf_value_and_grads(loss, shuffled_labels, shuffled_scores)
    assert shuffled_value == pytest.approx(value, rel=1e-11)
    for g, sg in zip(grads, shuffled_grads):
        np.testing.assert_allclose(sg, np.stack([g[b, p] for b, p in enumerate(perms)]), rtol=1e-8, atol=1e-13)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), stages=st.sampled_from([2, 3]),
       where=st.lists(st.integers(0, 40), min_size=1, max_size=6), seed=st.integers(0, 2**31 - 1))
def test_padding_anywhere_equals_the_compacted_list(name, stages, where, seed):
    rng = np.random.default_rng(seed)
    labels = reference_labels(stages, 1, rng)
    scores = random_scores(stages, labels.shape, rng)
    _check_padding_equals_compacted(name, stages, labels, scores, sorted(where), seed)


# ---------------------------------------------------------------------------------------------
# Registry, errors, serialisation, graph mode, uncertainty weighting
# ---------------------------------------------------------------------------------------------


def test_registry_and_call_errors():
    assert names() == NAMES
    assert get("bce", temperature=None).stages == 2  # None = the loss's default, for every loss
    with pytest.raises(ValueError, match="unknown loss name='lcorn'; valid names: bce, icc"):
        get("lcorn")
    loss = get("lcron", stages=2)
    with pytest.raises(ValueError, match="built for stages=2 but got 3 stage scores"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40])] * 3)
    with pytest.raises(ValueError, match=r"stage_scores\[1\].shape=.* does not match labels.shape"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40]), tf.zeros([2, 41])])
    with pytest.raises(ValueError, match="labels must be"):
        loss(tf.zeros([40]), [tf.zeros([40])] * 2)
    with pytest.raises(ValueError, match="mask.shape"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40])] * 2, mask=tf.ones([2, 39]))


def test_stacked_stage_scores_equal_a_list():
    labels, scores = reference_batch(3, seed=8)
    loss = get("lcron", stages=3)
    listed = float(loss(tf.constant(labels), [tf.constant(s) for s in scores]))
    stacked = float(loss(tf.constant(labels), tf.constant(np.stack(scores, axis=1))))
    assert stacked == pytest.approx(listed, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    loss = get(name, stages=3)
    config = loss.get_config()
    clone = loss_class(name).from_config(config)
    assert clone.get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(loss))
    assert type(revived) is type(loss) and revived.get_config() == config


@pytest.mark.parametrize("name,stages,options", OPTION_CASES[::3],
                         ids=[f"{n}-{s}-{'-'.join(o)}" for n, s, o in OPTION_CASES[::3]])
def test_config_round_trip_keeps_options(name, stages, options):
    loss = get(name, stages=stages, **options)
    clone = loss_class(name).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    for key, value in options.items():
        assert getattr(clone, key) == (tuple(value) if isinstance(value, tuple) else value)


GRAPH_CASES = [(name, False) for name in NAMES] + [(name, True) for name in ("bce", "rankflow", "lcron")]


@pytest.mark.parametrize("name,autograph", GRAPH_CASES, ids=[f"{n}-autograph={a}" for n, a in GRAPH_CASES])
def test_graph_mode_equals_eager(name, autograph):
    """Every loss traced (float32); a few also through autograph, as Keras' fit traces them
    (autograph's conversion is most of the tracing time)."""
    rng = np.random.default_rng(9)
    labels = reference_labels(2, 2, rng)
    labels[0, np.flatnonzero(labels[0] < 20)[:3]] = -1.0
    scores = [tf.constant(s, tf.float32) for s in random_scores(2, labels.shape, rng)]
    labels = tf.constant(labels, tf.float32)
    loss = get(name, stages=2)
    eager = float(loss(labels, scores))
    assert set(loss.terms) and all(np.isfinite(float(v)) for v in loss.terms.values())
    graph = tf.function(lambda y, a, b: loss(y, [a, b]), autograph=autograph)
    assert float(graph(labels, *scores)) == pytest.approx(eager, rel=1e-6)


def test_uncertainty_weighting_formula_and_config():
    uwl = UncertaintyWeighting(["a", "b"])
    uwl.w["a"].assign(2.0)
    uwl.w["b"].assign(0.5)
    got = float(uwl({"a": tf.constant(3.0), "b": tf.constant(1.0)}, [tf.constant(4.0)]))
    assert got == pytest.approx(0.5 / 4 * 3 + 0.5 / 0.25 * 1 + math.log(2) + math.log(0.5) + 4)
    clone = UncertaintyWeighting.from_config(uwl.get_config())
    assert clone.names == ["a", "b"] and float(clone.w["a"]) == 1.0  # initialised to 1


@pytest.mark.parametrize("name,weighted", [("lcron", "single_retrieval"), ("dftopk", "single_ranking"),
                                           ("lapsum", "single_prerank"), ("arf", "global_stage1"),
                                           ("arf_v2", "global_stage2")])
def test_uncertainty_weights_gradient(name, weighted):
    """∂/∂w (½·L/w² + log w) at w = 1 is 1 − L, and the loss is ½·L + (the rest) there."""
    labels, scores = reference_batch(3, seed=11)
    loss = get(name, stages=3)
    w = loss.uwl.w[weighted]
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels), [tf.constant(s) for s in scores])
    assert float(tape.gradient(value, w)) == pytest.approx(1.0 - float(loss.terms[weighted]), rel=1e-6)
    w.assign(2.0)
    moved = float(loss(tf.constant(labels), [tf.constant(s) for s in scores]))
    term = float(loss.terms[weighted])
    assert moved == pytest.approx(float(value) - 0.5 * term + 0.125 * term + math.log(2.0), rel=1e-9)
