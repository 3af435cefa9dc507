"""Metrics against brute force (python loops over items), numpy and Keras agreeing, bad inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.metrics.functions import (
    expected_recall,
    ground_truth,
    joint_recall,
    ndcg,
    stage_recall,
)
from tfcascade.metrics.streaming import NDCG, JointRecall, StageRecall
from tfcascade.ops.cascade_select import cascade_select


def _rank(scores, allowed):
    """Brute force: allowed indices sorted by (-score, index)."""
    return sorted((i for i in range(len(scores)) if allowed[i]), key=lambda i: (-scores[i], i))


def _gain(label, in_gt, gain):
    return {"linear": label, "exp": 2.0**label - 1, "binary": float(in_gt)}[gain]


def _brute(labels, stages, k, qs, gain="linear"):
    """Per request: joint recall, last-stage recall, last-stage NDCG (None = left out)."""
    out = {"joint": [], "recall": [], "ndcg": []}
    for b in range(len(labels)):
        valid = [lab >= 0 for lab in labels[b]]
        gt = set(_rank(labels[b], valid)[:k])
        kept = valid
        for s, q in zip(stages, qs):
            top = set(_rank(s[b], kept)[:q])
            kept = [i in top for i in range(len(valid))]
        if gt:
            out["joint"].append(sum(kept[i] for i in gt) / len(gt))
            out["recall"].append(len(set(_rank(stages[-1][b], valid)[: qs[-1]]) & gt) / len(gt))
        g = [_gain(labels[b][i], i in gt, gain) if valid[i] else 0.0 for i in range(len(valid))]
        ranked = _rank(stages[-1][b], valid)[:k]
        dcg = sum(g[i] / math.log2(r + 2) for r, i in enumerate(ranked))
        idcg = sum(v / math.log2(r + 2) for r, v in enumerate(sorted(g, reverse=True)[:k]))
        if idcg > 0:
            out["ndcg"].append(dcg / idcg)
    return {key: float(np.mean(v)) if v else 0.0 for key, v in out.items()}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(3, 30), three=st.booleans(),
       gain=st.sampled_from(["linear", "exp", "binary"]))
def test_numpy_and_keras_equal_brute_force(seed, n, three, gain):
    rng = np.random.default_rng(seed)
    b = 4
    k = int(rng.integers(1, n + 1))
    qs = sorted(rng.integers(1, n + 1, 3 if three else 2).tolist(), reverse=True)
    labels = rng.integers(0, 4, (b, n)).astype(np.float32)  # many label ties
    labels[rng.random((b, n)) < 0.2] = -1
    labels[-1, :] = -1 if seed % 3 == 0 else labels[-1, :]  # sometimes an all-padding request
    stages = [rng.integers(0, 5, (b, n)).astype(np.float32) for _ in qs]  # many score ties
    want = _brute(labels, stages, k, qs, gain)
    assert joint_recall(labels, stages, k, qs) == pytest.approx(want["joint"])
    assert joint_recall(labels, np.stack(stages, 1), k, qs) == pytest.approx(want["joint"])
    assert stage_recall(labels, stages[-1], k, qs[-1]) == pytest.approx(want["recall"])
    assert ndcg(labels, stages[-1], k, gain=gain) == pytest.approx(want["ndcg"])
    m = JointRecall(k, qs)
    m.update_state(labels[:2], np.stack(stages, 1)[:2])
    m.update_state(labels[2:], np.stack(stages, 1)[2:])
    assert float(m.result()) == pytest.approx(want["joint"], abs=1e-6)
    r = StageRecall(k, qs[-1])
    r.update_state(labels, stages[-1])
    assert float(r.result()) == pytest.approx(want["recall"], abs=1e-6)
    g = NDCG(k, gain=gain)
    g.update_state(labels, stages[-1])
    assert float(g.result()) == pytest.approx(want["ndcg"], abs=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_explicit_mask_equals_padding_labels(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, (3, 12)).astype(np.float64)
    stages = [rng.normal(size=(3, 12)) for _ in range(3)]
    mask = rng.random((3, 12)) > 0.3
    padded = np.where(mask, labels, -1.0)
    assert joint_recall(labels, stages, 3, (8, 6, 4), mask=mask) == joint_recall(padded, stages, 3, (8, 6, 4))
    assert stage_recall(labels, stages[0], 3, 5, mask=mask) == stage_recall(padded, stages[0], 3, 5)
    assert ndcg(labels, stages[1], 4, mask=mask) == ndcg(padded, stages[1], 4)
    np.testing.assert_array_equal(ground_truth(labels, 3, mask=mask), ground_truth(padded, 3))


def test_joint_recall_never_exceeds_last_stage_alone_when_it_is_a_perfect_filter():
    """Invariant: with an oracle last stage, joint recall = recall of the stages before it."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.tile(np.arange(40.0), (8, 1)).T).T
    retrieval = rng.normal(size=(8, 40))
    assert joint_recall(labels, [retrieval, labels], 10, (30, 20)) == pytest.approx(
        stage_recall(labels, retrieval, 10, 30))


def test_known_small_case():
    labels = np.array([[3, 2, 1, 0, -1, 0]], np.float32)
    retrieval = np.array([[0.9, 0.1, 0.8, 0.7, 9.0, 0.0]], np.float32)  # padding scored high
    ranking = np.array([[0.1, 5.0, 0.2, 0.3, 9.0, 0.0]], np.float32)
    # gt (k=2) = {0, 1}; retrieval keeps {0, 2, 3}; ranking keeps {3, 2}: joint recall 0.
    assert joint_recall(labels, [retrieval, ranking], 2, (3, 2)) == 0.0
    # Ranking alone keeps {1, 3}: recall 1/2.
    assert stage_recall(labels, ranking, 2, 2) == 0.5
    # NDCG@2, ranking order 1, 3: binary DCG 1, IDCG 1 + 1/log2 3.
    assert ndcg(labels, ranking, 2, gain="binary") == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # linear gains: DCG 2 + 0, IDCG 3 + 2/log2 3; exp gains: DCG 3, IDCG 7 + 3/log2 3.
    assert ndcg(labels, ranking, 2) == pytest.approx(2 / (3 + 2 / math.log2(3)))
    assert ndcg(labels, ranking, 2, gain="exp") == pytest.approx(3 / (7 + 3 / math.log2(3)))
    # A request with 2 valid items and k = 3: both kept → recall 1 (|CS_gt| = 2).
    assert joint_recall(np.array([[1.0, 0.0, -1, -1]]), [np.zeros((1, 4))] * 2, 3, (3, 2)) == 1.0


def test_sample_weights_and_empty_requests():
    labels = np.array([[2.0, 1, 0, 0], [2.0, 1, 0, 0], [-1, -1, -1, -1]])
    scores = np.array([[1.0, 0, 0, 0], [0.0, 0, 0, 1], [5.0, 5, 5, 5]])  # recall@2@1: 1/2, 0
    m = StageRecall(2, 1)
    m.update_state(labels, scores, sample_weight=np.array([3.0, 1.0, 7.0]))
    assert float(m.result()) == pytest.approx(3 * 0.5 / 4)  # the empty request weighs nothing
    m.reset_state()
    assert float(m.result()) == 0.0
    assert stage_recall(labels, scores, 2, 1) == pytest.approx(0.25)


def test_metrics_inside_a_compiled_graph():
    m = JointRecall(2, (3, 2))
    labels = tf.constant([[3.0, 2, 1, 0, -1, 0]])
    stacked = tf.constant([[[0.9, 0.1, 0.8, 0.7, 9.0, 0.0], [0.1, 5.0, 0.2, 0.3, 9.0, 0.0]]])

    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, 2, None])])
    def update(y, p):
        m.update_state(y, p)
        return m.result()

    assert float(update(labels, stacked)) == 0.0


def test_metrics_serialise_and_reject_bad_inputs():
    m = JointRecall(10, (30, 20))
    clone = JointRecall.from_config(m.get_config())
    assert clone.qs == [30, 20] and clone.k == 10 and clone.name == "joint_recall_at_10_at_20"
    g = NDCG.from_config(NDCG(5, gain="exp").get_config())
    assert (g.k, g.gain, g.name) == (5, "exp", "ndcg_at_5")
    assert StageRecall.from_config(StageRecall(10, 30).get_config()).q == 30
    with pytest.raises(ValueError, match="stacked stage scores"):
        m.update_state(np.zeros((2, 40)), np.zeros((2, 40)))
    with pytest.raises(ValueError, match="y_pred.shape"):
        StageRecall(10, 20).update_state(np.zeros((2, 40)), np.zeros((2, 41)))
    with pytest.raises(ValueError, match="k=0"):
        NDCG(0)
    with pytest.raises(ValueError, match="gain=.square"):
        NDCG(10, gain="square")
    with pytest.raises(ValueError, match="non-increasing"):
        JointRecall(10, (20, 30))
    with pytest.raises(ValueError, match="one q per stage"):
        joint_recall(np.zeros((1, 5)), [np.zeros((1, 5))], 2, (3, 2))
    with pytest.raises(ValueError, match="non-increasing"):
        joint_recall(np.zeros((1, 5)), [np.zeros((1, 5))] * 2, 2, (2, 3))
    with pytest.raises(ValueError, match=r"stage_scores\[1\].shape"):
        joint_recall(np.zeros((1, 5)), [np.zeros((1, 5)), np.zeros((1, 4))], 2, (3, 2))
    with pytest.raises(ValueError, match="labels must be"):
        stage_recall(np.zeros(5), np.zeros(5), 2, 3)
    with pytest.raises(ValueError, match="q=0"):
        stage_recall(np.zeros((1, 5)), np.zeros((1, 5)), 2, 0)
    with pytest.raises(ValueError, match="mask.shape"):
        ndcg(np.zeros((1, 5)), np.zeros((1, 5)), 2, mask=np.ones((1, 4)))
    with pytest.raises(ValueError, match="gain must be"):
        ndcg(np.zeros((1, 5)), np.zeros((1, 5)), 2, gain="log")
    with pytest.raises(ValueError, match="non-increasing"):
        cascade_select([tf.zeros([1, 5])] * 2, [2, 3])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 25), ties=st.booleans())
def test_gauc_equals_pairwise_brute_force(seed, n, ties):
    from tfcascade.metrics.functions import gauc

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 30, (6, n)).astype(float)
    labels[rng.random((6, n)) < 0.2] = -1.0  # padding
    scores = rng.integers(0, 4, (6, n)).astype(float) if ties else rng.normal(size=(6, n))
    k = int(rng.integers(1, n + 1))
    gt = ground_truth(labels, k)
    per_request = []
    for b in range(6):
        pos = [i for i in range(n) if gt[b, i]]
        neg = [j for j in range(n) if labels[b, j] >= 0 and not gt[b, j]]
        if pos and neg:
            wins = sum(1.0 if scores[b, i] > scores[b, j] else 0.5 if scores[b, i] == scores[b, j] else 0.0
                       for i in pos for j in neg)
            per_request.append(wins / (len(pos) * len(neg)))
    expected = float(np.mean(per_request)) if per_request else 0.0
    assert gauc(labels, scores, k) == pytest.approx(expected, abs=1e-12)


def test_gauc_rejects_nan_and_bad_k():
    from tfcascade.metrics.functions import gauc

    with pytest.raises(ValueError, match="NaN"):
        gauc(np.array([[1.0, 0.0]]), np.array([[np.nan, 0.0]]), 1)
    with pytest.raises(ValueError, match="k=0"):
        gauc(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), 0)


# ---- expected recall of a ranking with random tie-breaking (the blessing's naive rankers) -----

def _recall_over_every_tie_order(labels, scores, k, qs, mask):
    """Brute force: Joint Recall@k@q_T of the cascade whose every stage ranks by ``scores`` with
    ties broken by the order π, averaged over every permutation π of the items."""
    import itertools

    n = labels.shape[-1]
    total = 0.0
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        # A tiny per-item offset below the gap between distinct scores breaks ties in π's order.
        rank = np.empty(n)
        rank[list(perm)] = np.arange(n)
        broken = scores - 1e-6 * rank
        total += joint_recall(labels, [broken] * len(qs), k, qs, mask=mask)
    return total / len(perms)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), k=st.integers(1, 4), q=st.integers(1, 6),
       levels=st.integers(1, 4), two_stages=st.booleans())
def test_expected_recall_equals_the_mean_over_every_tie_break_order(seed, n, k, q, levels, two_stages):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (3, n)).astype(np.float64)
    mask = (rng.random((3, n)) < 0.8).astype(np.float64)
    scores = rng.integers(0, levels, (3, n)).astype(np.float64)  # few levels: many ties
    qs = [q + 1, q] if two_stages else [q]
    expected = _recall_over_every_tie_order(labels, scores, k, qs, mask)
    assert expected_recall(labels, scores, k, q, mask=mask) == pytest.approx(expected, abs=1e-9)


def test_constant_scores_are_a_random_order():
    labels = np.array([[3, 2, 1, 0, 0, 0, -1, -1], [1, 0, 0, 0, 0, 0, 0, 0]], np.float64)
    # 6 valid items, keep 3: each kept with probability 1/2; 8 valid, keep 3: 3/8.
    assert expected_recall(labels, np.zeros_like(labels), k=2, q=3) == pytest.approx((0.5 + 3 / 8) / 2)
    # Distinct scores: expected recall is the plain recall.
    scores = np.random.default_rng(0).random(labels.shape)
    assert expected_recall(labels, scores, 2, 3) == pytest.approx(stage_recall(labels, scores, 2, 3))


def test_expected_recall_rejects_bad_input():
    labels = np.zeros((2, 5))
    with pytest.raises(ValueError, match="q must be a positive integer, got q=0"):
        expected_recall(labels, labels, 2, 0)
    with pytest.raises(ValueError, match="NaN"):
        expected_recall(labels, np.full((2, 5), np.nan), 2, 3)
    with pytest.raises(ValueError, match=r"scores.shape=\(2, 4\)"):
        expected_recall(labels, np.zeros((2, 4)), 2, 3)
