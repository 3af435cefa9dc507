"""Every cascade loss against a straightforward numpy re-computation (with masks, 2 and 3
stages), finite-difference gradients for LCRON and DFTopK, registry errors, serialisation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.losses.registry import get, loss_class, names
from tfcascade.losses.uncertainty import UncertaintyWeighting

EPS = 1e-7
K = 3


def _sig(x):
    return 0.5 * (1 + np.tanh(x / 2))  # overflow-free logistic


def _bce_p(p, y, w):
    p = np.clip(p, EPS, 1 - EPS)
    v = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return (v * w).sum() / w.sum() if w.sum() else 0.0


def _bce_z(z, y, w):
    return _bce_p(_sig(z), y, w)


def _gt(labels, valid, k):
    out = np.zeros_like(labels)
    for b in range(len(labels)):
        idx = sorted(np.flatnonzero(valid[b]), key=lambda i: (-labels[b, i], i))[:k]
        out[b, idx] = 1
    return out


def _top(scores, allowed, q):
    out = np.zeros(scores.shape, bool)
    for b in range(len(scores)):
        idx = sorted(np.flatnonzero(allowed[b]), key=lambda i: (-scores[b, i], i))[:q]
        out[b, idx] = True
    return out


def _neural_sort(x, valid, tau):
    """Formula on the valid items, masked rows uniform over masked columns."""
    n = len(x)
    xv = x[valid]
    nv = len(xv)
    out = np.zeros((n, n))
    a1 = np.abs(xv[:, None] - xv[None, :]).sum(1)
    for r in range(1, nv + 1):
        logits = ((nv + 1 - 2 * r) * xv - a1) / tau
        e = np.exp(logits - logits.max())
        out[r - 1, valid] = e / e.sum()
    if nv < n:
        out[nv:, ~valid] = 1 / (n - nv)
    return out


def _topq(perm, q):
    return perm[:q].sum(0) / perm.sum(0)


def _ranknet(labels, s, valid):
    tot, cnt = 0.0, 0
    for b in range(len(s)):
        for i in range(s.shape[1]):
            for j in range(s.shape[1]):
                if valid[b, i] and valid[b, j] and labels[b, i] > labels[b, j]:
                    tot += math.log1p(math.exp(-(s[b, i] - s[b, j])))
                    cnt += 1
    return tot / cnt


def _uwl(weighted):
    return sum(0.5 * v for v in weighted)  # all w = 1 at initialisation: ½·L + log 1


@pytest.fixture(params=[2, 3])
def batch(request):
    stages = request.param
    rng = np.random.default_rng(stages)
    b, n = 3, 9
    labels = rng.permutation(np.tile(np.arange(n, dtype=np.float64), (b, 1)).T).T + rng.integers(0, 3, (b, n))
    labels[:, :2] += 7  # some items "reached" ranking (label >= 7)
    labels[0, -2:] = -1  # padding
    valid = labels >= 0
    scores = [rng.normal(size=(b, n)) for _ in range(stages)]
    qs = (6, 4) if stages == 2 else (7, 5, 4)
    return stages, labels, valid, scores, qs


def _call(name, batch, **options):
    stages, labels, _, scores, qs = batch
    loss = get(name, stages=stages, k=K, stage_qs=qs, **options)
    return float(loss(tf.constant(labels), [tf.constant(s) for s in scores])), loss


def test_bce(batch):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    reached = (0, 7) if stages == 2 else (0, 6, 7)
    want = sum(_bce_z(s, y, (valid & (labels >= r)).astype(float)) for s, r in zip(scores, reached))
    assert _call("bce", batch)[0] == pytest.approx(want, rel=2e-5)
    custom = [3.0] * stages
    want = sum(_bce_z(s, y, (valid & (labels >= 3)).astype(float)) for s in scores)
    assert _call("bce", batch, reached_labels=custom)[0] == pytest.approx(want, rel=2e-5)


def test_lcron_and_softsort_variant(batch):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    w = valid.astype(float)
    for sort, tau in (("neural", 0.7), ("soft", 0.7)):
        perms = []
        for s in scores:
            if sort == "neural":
                perms.append(np.stack([_neural_sort(s[b], valid[b], tau) for b in range(len(s))]))
            else:
                perms.append(np.stack([_soft_sort(s[b], valid[b], tau) for b in range(len(s))]))
        single = [_bce_p(np.stack([_topq(p[b], K) for b in range(len(p))]), y, w) for p in perms]
        survival = np.prod([np.stack([_topq(p[b], K) for b in range(len(p))]) for p in perms], axis=0)
        want = _uwl(single) + _bce_p(survival, y, w)
        got, loss = _call("lcron", batch, temperature=tau, sort=sort)
        assert got == pytest.approx(want, rel=2e-5)
        assert set(loss.terms) == {f"single_{n}" for n in loss.names} | {"e2e"}


def _soft_sort(x, valid, tau):
    n = len(x)
    xv = x[valid]
    nv = len(xv)
    out = np.zeros((n, n))
    srt = np.sort(xv)[::-1]
    for r in range(nv):
        logits = -np.abs(srt[r] - xv) / tau
        e = np.exp(logits - logits.max())
        out[r, valid] = e / e.sum()
    if nv < n:
        out[nv:, ~valid] = 1 / (n - nv)
    return out


def _np_lapsum(x, valid, k, alpha):
    xv = x[valid]
    lo, hi = xv.min() - 60 * alpha - 1, xv.max() + 60 * alpha + 1

    def cdf(z):
        return np.where(z <= 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))

    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf((xv - mid) / alpha).sum() > k else (lo, mid)
    return np.where(valid, cdf((x - (lo + hi) / 2) / alpha), 0.0)


def test_lapsum_cascade(batch):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    w = valid.astype(float)
    m = [np.stack([_np_lapsum(s[b], valid[b], K, 0.5) for b in range(len(s))]) for s in scores]
    want = _uwl([_bce_p(mi, y, w) for mi in m]) + _bce_p(np.prod(m, axis=0), y, w)
    assert _call("lapsum", batch, temperature=0.5)[0] == pytest.approx(want, rel=2e-5)


def test_dftopk_cascade(batch):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    w = valid.astype(float)
    logits = []
    for s in scores:
        z = np.zeros_like(s)
        for b in range(len(s)):
            v = np.sort(s[b][valid[b]])[::-1]
            z[b] = (s[b] - (v[K - 1] + v[K]) / 2) / 0.5
        logits.append(z)
    want = _uwl([_bce_z(z, y, w) for z in logits]) + _bce_p(np.prod([_sig(z) for z in logits], 0), y, w)
    assert _call("dftopk", batch, temperature=0.5)[0] == pytest.approx(want, rel=2e-5)


def test_icc(batch):
    stages, labels, valid, scores, qs = batch
    ens = _sig(scores[-1])
    for s, q in zip(scores[:-1], qs[:-1]):
        kth = np.array([np.sort(s[b][valid[b]])[::-1][q - 1] for b in range(len(s))])[:, None]
        ens = ens * _sig((s - kth) / 1e-3)
    want = _ranknet(labels, np.log(ens + 1e-12), valid)
    assert _call("icc", batch)[0] == pytest.approx(want, rel=2e-5)


@pytest.mark.parametrize("pairwise_weight", [0.0, 0.5])
def test_rankflow(batch, pairwise_weight):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    want = _bce_z(scores[0], y, valid.astype(float))
    for t in range(1, stages):
        passed = _top(scores[t - 1], valid, qs[t - 1])
        w = passed.astype(float)
        want += _bce_z(scores[t], y, w)
        want += ((scores[t] - scores[t - 1]) ** 2 * w).sum() / w.sum()
        if pairwise_weight:
            top = _top(scores[t], passed, K).astype(float)
            rest = w * (1 - top)
            gap = (scores[t - 1] * top).sum() / top.sum() - (scores[t - 1] * rest).sum() / rest.sum()
            want += pairwise_weight * math.log1p(math.exp(-gap))
    assert _call("rankflow", batch, pairwise_weight=pairwise_weight)[0] == pytest.approx(want, rel=2e-5)


def test_fs_ranknet(batch):
    stages, labels, valid, scores, qs = batch
    want = sum(_ranknet(labels, s, valid) for s in scores)
    assert _call("fs_ranknet", batch)[0] == pytest.approx(want, rel=2e-5)


def test_fs_lambdaloss(batch):
    stages, labels, valid, scores, qs = batch
    topn = 4
    want = 0.0
    for s in scores:
        per = []
        for b in range(len(s)):
            idx = np.flatnonzero(valid[b])
            order = sorted(idx, key=lambda i: (-s[b, i], i))
            rank = {i: r + 1 for r, i in enumerate(order)}
            gains = np.sort(labels[b][idx])[::-1][:topn]
            idcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
            tot = 0.0
            for i in idx:
                for j in idx:
                    if labels[b, i] > labels[b, j] and (rank[i] <= topn or rank[j] <= topn):
                        d = abs(rank[i] - rank[j])
                        delta = abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                        wij = abs(labels[b, i] - labels[b, j]) * delta / idcg
                        tot += wij * math.log1p(math.exp(-(s[b, i] - s[b, j])))
            per.append(tot)
        want += np.mean(per)
    assert _call("fs_lambdaloss", batch, topn=topn)[0] == pytest.approx(want, rel=2e-5)


def test_arf_and_arf_v2(batch):
    stages, labels, valid, scores, qs = batch
    y = _gt(labels, valid, K)
    w = valid.astype(float)
    tau = 2.0
    arf, v2 = [], []
    for s, m in zip(scores, [K] * len(scores)):  # m = k by default
        perm = np.stack([_neural_sort(s[b], valid[b], tau) for b in range(len(s))])
        in_top = perm[:, :m, :].mean(1)
        arf.append(-(np.log(np.clip(in_top, EPS, 1)) * y).sum() / y.sum())
        picked = []
        for b in range(len(s)):
            order = sorted(np.flatnonzero(valid[b]), key=lambda i: (-labels[b, i], i))
            picked += [perm[b, r, order[r]] for r in range(K)]
        arf.append(-np.mean(np.log(np.clip(picked, EPS, 1))))
        member = np.stack([_topq(perm[b], m) for b in range(len(s))])
        v2.append(-(np.log(np.clip(member, EPS, 1)) * y).sum() / y.sum())
        down = w * (1 - y)
        v2.append(-(np.log(np.clip(1 - member, EPS, 1)) * down).sum() / down.sum())
    assert _call("arf", batch, temperature=tau)[0] == pytest.approx(_uwl(arf), rel=1e-5)
    assert _call("arf_v2", batch, temperature=tau)[0] == pytest.approx(_uwl(v2), rel=1e-5)


def _frozen_lcron(base_scores, **options):
    """LCRON whose top-q denominators are constants taken at ``base_scores``.

    ``topq_membership`` stops the gradient of the column sums, so the gradient of LCRON at a
    point is the gradient of this frozen-denominator function there — which finite
    differences can check.
    """
    from tfcascade.losses.lcron import LCRONLoss
    from tfcascade.ops.soft_permutation import neural_sort

    class Frozen(LCRONLoss):
        calls = 0

        def membership(self, scores, q, weights):
            t = Frozen.calls % len(base_scores)
            Frozen.calls += 1
            perm = neural_sort(scores, self.temperature, mask=weights > 0)
            colsum = tf.reduce_sum(neural_sort(base_scores[t], self.temperature, mask=weights > 0), axis=-2)
            return tf.reduce_sum(perm[..., :q, :], axis=-2) / colsum

    return Frozen(**options)


@pytest.mark.parametrize("name,options", [("lcron", {"temperature": 0.5}), ("dftopk", {"temperature": 0.5})])
def test_gradients_match_finite_differences(name, options):
    rng = np.random.default_rng(11)
    labels = tf.constant([[5.0, 1, 3, 0, 2, 4, -1], [0, 1, 2, 3, 4, 5, 6]], tf.float64)
    s0 = tf.constant(rng.normal(size=(2, 7)))
    s1 = tf.constant(rng.normal(size=(2, 7)))
    loss = get(name, stages=2, k=2, stage_qs=(4, 3), **options)
    with tf.GradientTape() as tape:
        tape.watch([s0, s1])
        value = loss(labels, [s0, s1])
    theo = tape.gradient(value, [s0, s1])
    reference = loss if name == "dftopk" else _frozen_lcron([s0, s1], stages=2, k=2, stage_qs=(4, 3), **options)
    _, numer = tf.test.compute_gradient(lambda a, b: reference(labels, [a, b]), [s0, s1], delta=1e-6)
    for t, nm in zip(theo, numer):
        np.testing.assert_allclose(t.numpy().reshape(1, -1), nm, atol=1e-6)
    w = loss.uwl.w["single_retrieval"]
    with tf.GradientTape() as tape:
        value = loss(labels, [s0, s1])
    g = tape.gradient(value, w)
    # ∂/∂w (½ L / w² + log w) at w = 1 is 1 − L_single.
    assert float(g) == pytest.approx(1 - float(loss.terms["single_retrieval"]), rel=1e-6)


@pytest.mark.parametrize("name", names())
def test_explicit_mask_equals_padding_labels_and_graph_mode(name):
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.tile(np.arange(12.0), (3, 1)).T).T
    mask = np.ones((3, 12), bool)
    mask[1, [0, 4, 7]] = False
    scores = [tf.constant(rng.normal(size=(3, 12)), tf.float32) for _ in range(3)]
    loss = get(name, stages=3, k=3, stage_qs=(8, 6, 4))
    masked = float(loss(tf.constant(labels, tf.float32), scores, mask=tf.constant(mask)))
    padded = tf.constant(np.where(mask, labels, -1.0), tf.float32)
    assert masked == pytest.approx(float(loss(padded, scores)), rel=1e-6)
    assert np.isfinite(masked)
    assert set(loss.terms) and all(np.isfinite(float(v)) for v in loss.terms.values())
    if name in ("lcron", "dftopk", "bce"):  # graph mode (tracing is slow: a few losses only)
        graph = tf.function(lambda y, a, b, c: loss(y, [a, b, c]))
        assert float(graph(padded, *scores)) == pytest.approx(masked, rel=1e-5)


def test_registry_and_errors():
    assert names() == ["bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2",
                       "lcron", "dftopk", "lapsum"]
    with pytest.raises(ValueError, match="unknown loss name='lcorn'; valid names: bce"):
        get("lcorn")
    with pytest.raises(ValueError, match="stages=4"):
        get("bce", stages=4)
    with pytest.raises(ValueError, match="no temperature"):
        get("bce", temperature=3.0)
    loss = get("lcron", stages=2)
    with pytest.raises(ValueError, match="built for stages=2 but got 3"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40])] * 3)
    with pytest.raises(ValueError, match="does not match labels.shape"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40]), tf.zeros([2, 41])])
    with pytest.raises(ValueError, match="labels must be"):
        loss(tf.zeros([40]), [tf.zeros([40])] * 2)
    with pytest.raises(ValueError, match="mask.shape"):
        loss(tf.zeros([2, 40]), [tf.zeros([2, 40])] * 2, mask=tf.ones([2, 39]))
    with pytest.raises(ValueError, match="reached_labels needs 2"):
        get("bce", reached_labels=(0, 6, 7))
    with pytest.raises(ValueError, match="topn must be"):
        get("fs_lambdaloss", topn=0)
    with pytest.raises(ValueError, match="sort must be"):
        get("lcron", sort="quick")


@pytest.mark.parametrize("name", names())
def test_config_round_trip(name):
    loss = get(name, stages=3)
    config = loss.get_config()
    clone = loss_class(name).from_config(config)
    assert clone.get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(loss))
    assert type(revived) is type(loss) and revived.get_config() == config


def test_uncertainty_weighting_formula_and_config():
    uwl = UncertaintyWeighting(["a", "b"])
    uwl.w["a"].assign(2.0)
    uwl.w["b"].assign(0.5)
    got = float(uwl({"a": tf.constant(3.0), "b": tf.constant(1.0)}, [tf.constant(4.0)]))
    assert got == pytest.approx(0.5 / 4 * 3 + 0.5 / 0.25 * 1 + math.log(2) + math.log(0.5) + 4)
    clone = UncertaintyWeighting.from_config(uwl.get_config())
    assert clone.names == ["a", "b"] and float(clone.w["a"]) == 1.0  # initialised to 1
