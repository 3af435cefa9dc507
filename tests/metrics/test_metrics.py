"""Metrics against brute force (python loops), numpy and Keras agreeing, bad inputs."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.metrics import NDCG, JointRecall, StageRecall, joint_recall, ndcg, stage_recall
from tfcascade.ops.cascade_select import cascade_select


def _rank(scores, allowed):
    """Brute force: allowed indices sorted by (-score, index)."""
    return sorted((i for i in range(len(scores)) if allowed[i]), key=lambda i: (-scores[i], i))


def _brute(labels, stages, k, qs):
    out = {"joint": [], "recall": [], "ndcg": []}
    for b in range(len(labels)):
        valid = [lab >= 0 for lab in labels[b]]
        gt = set(_rank(labels[b], valid)[:k])
        kept = valid
        for s, q in zip(stages, qs):
            top = set(_rank(s[b], kept)[:q])
            kept = [i in top for i in range(len(valid))]
        out["joint"].append(sum(kept[i] for i in gt) / k)
        out["recall"].append(len(set(_rank(stages[-1][b], valid)[: qs[-1]]) & gt) / k)
        ranked = _rank(stages[-1][b], valid)[:k]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in gt)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(gt))))
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
    return {key: float(np.mean(v)) for key, v in out.items()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(3, 30), three=st.booleans())
def test_numpy_and_keras_equal_brute_force(seed, n, three):
    rng = np.random.default_rng(seed)
    b = 4
    k = int(rng.integers(1, n + 1))
    qs = sorted(rng.integers(1, n + 1, 3 if three else 2).tolist(), reverse=True)
    labels = rng.integers(0, 4, (b, n)).astype(np.float32)  # many label ties
    labels[rng.random((b, n)) < 0.2] = -1
    stages = [rng.integers(0, 5, (b, n)).astype(np.float32) for _ in qs]  # many score ties
    want = _brute(labels, stages, k, qs)
    assert joint_recall(labels, stages, k, qs) == pytest.approx(want["joint"])
    assert stage_recall(labels, stages[-1], k, qs[-1]) == pytest.approx(want["recall"])
    assert ndcg(labels, stages[-1], k) == pytest.approx(want["ndcg"])
    m = JointRecall(k, qs)
    m.update_state(labels[:2], np.stack(stages, 1)[:2])
    m.update_state(labels[2:], np.stack(stages, 1)[2:])
    assert float(m.result()) == pytest.approx(want["joint"], abs=1e-6)
    r = StageRecall(k, qs[-1])
    r.update_state(labels, stages[-1])
    assert float(r.result()) == pytest.approx(want["recall"], abs=1e-6)
    g = NDCG(k)
    g.update_state(labels, stages[-1])
    assert float(g.result()) == pytest.approx(want["ndcg"], abs=1e-6)


def test_known_small_case():
    labels = np.array([[3, 2, 1, 0, -1, 0]], np.float32)
    retrieval = np.array([[0.9, 0.1, 0.8, 0.7, 9.0, 0.0]], np.float32)  # padding scored high
    ranking = np.array([[0.1, 5.0, 0.2, 0.3, 9.0, 0.0]], np.float32)
    # gt (k=2) = {0, 1}; retrieval keeps {0, 2, 3}; ranking keeps {3, 2}: joint recall 0.
    assert joint_recall(labels, [retrieval, ranking], 2, (3, 2)) == 0.0
    # Ranking alone keeps {1, 3}: recall 1/2; NDCG@2: hit at rank 1 → 1 / (1 + 1/log2 3).
    assert stage_recall(labels, ranking, 2, 2) == 0.5
    assert ndcg(labels, ranking, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_metrics_serialise_and_reject_bad_shapes():
    m = JointRecall(10, (30, 20))
    clone = JointRecall.from_config(m.get_config())
    assert clone.qs == [30, 20] and clone.k == 10 and clone.name == "joint_recall_at_10_at_20"
    with pytest.raises(ValueError, match="stacked stage scores"):
        m.update_state(np.zeros((2, 40)), np.zeros((2, 40)))
    with pytest.raises(ValueError, match="k=0"):
        NDCG(0)
    with pytest.raises(ValueError, match="one q per stage"):
        joint_recall(np.zeros((1, 5)), [np.zeros((1, 5))], 2, (3, 2))
    with pytest.raises(ValueError, match="non-increasing"):
        cascade_select([tf.zeros([1, 5])] * 2, [2, 3])
