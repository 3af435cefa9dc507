"""Successive-halving top-k: numpy re-implementation, exact k rows for any n, gradients."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.tournament import iterative_softmax_topk, ncc_similarity, tournament_topk


def _np_tournament(e, v, k, c):
    e, v = e.copy(), v.copy()
    while len(v) > k:
        order = np.argsort(-v, kind="stable")
        e, v = e[order], v[order]
        length = len(v)
        if length >= 2 * k:
            if length % 2:
                e = np.concatenate([e, np.zeros_like(e[:1])])
                v = np.concatenate([v, [-1e30]])
                length += 1
            hi, lo = slice(0, length // 2), slice(length - 1, length // 2 - 1, -1)
            keep_e, keep_v = np.zeros((0, e.shape[1])), np.zeros(0)
        else:
            keep = 2 * k - length
            keep_e, keep_v = e[:keep], v[:keep]
            e, v = e[keep:], v[keep:]
            pairs = length - k
            hi, lo = slice(0, pairs), slice(len(v) - 1, pairs - 1 if pairs > 0 else None, -1)
        a, b = c * v[hi], c * v[lo]
        m = np.maximum(a, b)
        w0 = np.exp(a - m) / (np.exp(a - m) + np.exp(b - m))
        e = np.concatenate([keep_e, w0[:, None] * e[hi] + (1 - w0)[:, None] * e[lo]])
        v = np.concatenate([keep_v, w0 * v[hi] + (1 - w0) * v[lo]])
    order = np.argsort(-v, kind="stable")
    return e[order], v[order]


@pytest.mark.parametrize("n,k", [(16, 4), (200, 10), (7, 3), (9, 1), (5, 5), (33, 8)])
def test_matches_numpy_reimplementation(n, k):
    rng = np.random.default_rng(n * 31 + k)
    e = rng.normal(size=(n, 4))
    v = rng.normal(size=n)
    got_e, got_v = tournament_topk(tf.constant(e[None]), tf.constant(v[None]), k, boost=3.0)
    want_e, want_v = _np_tournament(e, v, k, 3.0)
    np.testing.assert_allclose(got_v.numpy()[0], want_v, atol=1e-9)
    np.testing.assert_allclose(got_e.numpy()[0], want_e, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 70), data=st.data(), seed=st.integers(0, 2**16))
def test_exactly_k_rows_and_hard_limit(n, data, seed):
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    v = rng.permutation(n).astype(np.float32)  # distinct, spacing 1
    e = rng.normal(size=(2, n, 3)).astype(np.float32)
    out_e, out_v = tournament_topk(e, np.stack([v, v]), k, boost=200.0)
    assert out_e.shape == (2, k, 3) and out_v.shape == (2, k)
    # With a huge boost every mix is hard: the result is the true top-k.
    np.testing.assert_allclose(out_v.numpy()[0], np.sort(v)[::-1][:k], rtol=1e-5)
    np.testing.assert_allclose(ncc_similarity(out_e, e, np.stack([v, v]), k).numpy(), 1.0, atol=1e-5)


def test_gradients_finite_differences():
    rng = np.random.default_rng(5)
    e = tf.constant(rng.normal(size=(1, 10, 3)))
    v = tf.constant(rng.normal(size=(1, 10)))
    theo, numer = tf.test.compute_gradient(lambda a, b: tournament_topk(a, b, 3, boost=2.0)[0], [e, v])
    for t, nm in zip(theo, numer):
        np.testing.assert_allclose(t, nm, atol=1e-6)


def test_infinite_scores_and_xla():
    v = tf.constant([[1.0, -np.inf, 3.0, 2.0, np.inf, 0.5]])
    e = tf.random.stateless_normal([1, 6, 2], seed=[3, 4])
    with tf.GradientTape() as tape:
        tape.watch([e, v])
        out_e, out_v = tournament_topk(e, v, 2)
        loss = tf.reduce_sum(out_e) + tf.reduce_sum(out_v)
    grads = tape.gradient(loss, [e, v])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    np.testing.assert_allclose(out_e.numpy()[0, 0], e.numpy()[0, 4], atol=1e-6)
    xla_e, _ = tf.function(lambda a, b: tournament_topk(a, b, 2), jit_compile=True)(e, v)
    np.testing.assert_allclose(xla_e.numpy(), out_e.numpy(), atol=1e-6)


def test_iterative_softmax_baseline_hard_limit():
    v = np.array([[0.0, 5.0, 2.0, 9.0]], np.float32)
    e = np.eye(4, dtype=np.float32)[None]
    out_e, out_v = iterative_softmax_topk(e, v, 2, boost=100.0)
    np.testing.assert_allclose(out_v.numpy(), [[9.0, 5.0]], atol=1e-4)
    np.testing.assert_allclose(out_e.numpy()[0], np.eye(4)[[3, 1]], atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=5"):
        tournament_topk(tf.zeros([1, 4, 2]), tf.zeros([1, 4]), 5)
    with pytest.raises(TypeError, match="k=2.0"):
        tournament_topk(tf.zeros([1, 4, 2]), tf.zeros([1, 4]), 2.0)
    with pytest.raises(ValueError, match="embeddings"):
        tournament_topk(tf.zeros([1, 4]), tf.zeros([1, 4]), 2)
    with pytest.raises(ValueError, match="boost"):
        tournament_topk(tf.zeros([1, 4, 2]), tf.zeros([1, 4]), 2, boost=0.0)
