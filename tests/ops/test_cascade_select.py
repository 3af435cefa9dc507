"""The hard cascade: survivors-only (inference) equals selection on every stage's whole-list scores."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.brute_force_topk import brute_force_top_k
from tfcascade.ops.cascade_select import cascade_select, survivor_cascade


def _numpy_cascade(scores, qs, mask, k):
    """Brute force: per row, each stage sorts what the previous kept by (−score, position)."""
    out_idx, out_val = [], []
    for b in range(scores[0].shape[0]):
        kept = [i for i in range(scores[0].shape[1]) if mask[b, i]]
        for s, q in zip(scores, qs):
            kept = sorted(kept, key=lambda i, s=s: (-s[b, i], i))[:q]
        top = kept[:k]
        out_idx.append(top + [-1] * (k - len(top)))
        out_val.append([scores[-1][b, i] for i in top] + [-np.inf] * (k - len(top)))
    return np.array(out_idx, np.int64).reshape(-1, k), np.array(out_val, np.float32).reshape(-1, k)


def _survivors(scores, qs, mask, k):
    """survivor_cascade where stage t "scores" the gathered positions by looking up scores[t]."""
    tables = [tf.constant(s, tf.float32) for s in scores]
    calls = []

    def stage(t):
        def fn(features):
            calls.append(int(features["at"].shape[1]))
            return tf.gather(tables[t], tf.maximum(features["at"], 0), batch_dims=1)
        return fn

    first = tf.where(tf.constant(mask), tables[0], -np.inf)
    values, positions = tf.math.top_k(first, k=min(qs[0], first.shape[1]))
    idx, val = survivor_cascade([stage(t) for t in range(1, len(scores))], lambda at: {"at": at},
                                values, positions, qs[1:], k)
    return idx.numpy(), val.numpy(), calls


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_survivors_equal_whole_list_selection_and_brute_force(data):
    stages = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(0, 14))
    b = data.draw(st.integers(1, 3))
    qs = sorted(data.draw(st.lists(st.integers(1, 12), min_size=stages, max_size=stages)), reverse=True)
    k = data.draw(st.integers(1, qs[-1]))
    ties = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    scores = [(rng.integers(0, 3, (b, n)) if ties else rng.normal(size=(b, n))).astype(np.float32)
              for _ in range(stages)]
    mask = rng.random((b, n)) < 0.8
    want_idx, want_val = _numpy_cascade(scores, qs, mask, k)
    idx, val, calls = _survivors(scores, qs, mask, k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)
    assert all(m <= q for m, q in zip(calls, qs))  # stage t saw at most q_{t-1} items
    if n:
        _, old_idx, old_val = cascade_select(scores, qs, mask)
        np.testing.assert_array_equal(idx[:, : old_idx.shape[1]], old_idx.numpy()[:, :k])


def test_later_stages_score_only_the_survivors():
    scores = [np.arange(100, dtype=np.float32)[None], -np.arange(100, dtype=np.float32)[None]]
    idx, val, calls = _survivors(scores, (10, 3), np.ones((1, 100), bool), 3)
    assert calls == [10]
    np.testing.assert_array_equal(idx, [[90, 91, 92]])  # retrieval's top 10, then ranking's best 3


def test_survivor_cascade_arguments_are_checked():
    with pytest.raises(ValueError, match="one q per later stage"):
        survivor_cascade([], lambda at: {}, tf.zeros([1, 2]), tf.zeros([1, 2], tf.int64), [3], 1)
    with pytest.raises(ValueError, match="k must be > 0, got k=0"):
        survivor_cascade([], lambda at: {}, tf.zeros([1, 2]), tf.zeros([1, 2], tf.int64), [], 0)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(1, 12), chunk=st.integers(1, 9), block=st.integers(1, 5),
       ties=st.booleans(), seed=st.integers(0, 2**31))
def test_brute_force_top_k_equals_one_top_k_over_the_whole_corpus(m, k, chunk, block, ties, seed):
    rng = np.random.default_rng(seed)
    corpus = (rng.integers(-1, 2, (m, 3)) if ties else rng.normal(size=(m, 3))).astype(np.float32)
    queries = rng.normal(size=(2, 3)).astype(np.float32)
    if ties:
        queries = np.ones_like(queries)
    scores, rows = brute_force_top_k(queries, corpus, k, chunk_size=chunk, block_size=block)
    full = tf.linalg.matmul(queries, corpus, transpose_b=True)
    want_scores, want_rows = tf.math.top_k(full, k=min(k, m))
    np.testing.assert_array_equal(rows.numpy(), want_rows.numpy())
    np.testing.assert_allclose(scores.numpy(), want_scores.numpy(), rtol=1e-6)


def test_brute_force_top_k_in_a_graph_with_a_tensor_k_and_bad_chunk():
    fn = tf.function(lambda q, c, k: brute_force_top_k(q, c, k, chunk_size=4))
    _, rows = fn(tf.ones([1, 2]), tf.constant(np.arange(20, dtype=np.float32).reshape(10, 2)), tf.constant(3))
    np.testing.assert_array_equal(rows.numpy(), [[9, 8, 7]])
    with pytest.raises(ValueError, match="chunk_size must be > 0, got chunk_size=0"):
        brute_force_top_k(tf.ones([1, 2]), tf.ones([3, 2]), 1, chunk_size=0)
    with pytest.raises(ValueError, match="block_size must be > 0, got block_size=-1"):
        brute_force_top_k(tf.ones([1, 2]), tf.ones([3, 2]), 1, block_size=-1)
