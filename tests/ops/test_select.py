"""O(n) selection of x_[k] and x_[k+1] against numpy sorting."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.select import (
    from_keys,
    kth_largest,
    kth_largest_pair,
    kth_largest_pair_and_positions,
    order_keys,
)


def _np_pair(x, valid, k):
    v = np.sort(x[valid])[::-1]
    return v[k - 1], (v[k] if k < len(v) else -np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_keys_preserve_order_and_invert(dtype):
    x = np.array([-np.inf, -3e38 if dtype == np.float32 else -1e300, -1.0, -1e-40, -0.0, 0.0, 1e-45, 1.0, 2.5,
                  np.finfo(dtype).max, np.inf], dtype)
    keys = order_keys(tf.constant(x)).numpy()
    assert np.all(np.diff(keys.astype(np.int64)) > 0)
    np.testing.assert_array_equal(from_keys(tf.constant(keys), tf.as_dtype(dtype)).numpy(), x)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 300), method=st.sampled_from(["count", "auto", "extract"]),
       ties=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_selection_equals_numpy_sort(seed, n, method, ties, dtype, data):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-20, 20)
    x = (rng.integers(-3, 3, (3, n)) if ties else rng.normal(size=(3, n)) * scale).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < 0.05] = -np.inf
    valid = rng.random(x.shape) < 0.9
    valid[:, 0] = True
    k = data.draw(st.integers(1, int(valid.sum(-1).min())))
    kth, nxt = kth_largest_pair(tf.constant(x), k, tf.constant(valid), method=method)
    for b in range(3):
        want = _np_pair(x[b], valid[b], k)
        assert kth.numpy()[b, 0] == want[0]
        assert nxt.numpy()[b, 0] == want[1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 120), ties=st.booleans())
def test_per_row_k_tensor_with_masks(seed, n, ties):
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 4, (4, n)) if ties else rng.normal(size=(4, n))).astype(np.float32)
    valid = rng.random(x.shape) < 0.7
    valid[:, :2] = True
    k = np.array([rng.integers(1, valid[b].sum() + 1) for b in range(4)], np.int32)
    kth, nxt = kth_largest_pair(tf.constant(x), tf.constant(k), tf.constant(valid))
    for b in range(4):
        assert (kth.numpy()[b, 0], nxt.numpy()[b, 0]) == _np_pair(x[b], valid[b], k[b])
    np.testing.assert_array_equal(kth_largest(x, tf.constant(k), mask=valid).numpy(), kth.numpy()[:, 0])


def test_public_kth_largest_examples_and_leading_dims():
    x = np.array([[5.0, 1, 3, 3, 2], [0, 9, 8, 7, 6]], np.float32)
    np.testing.assert_array_equal(kth_largest(x, tf.constant([3, 5])).numpy(), [3.0, 0.0])
    kth, nxt = kth_largest_pair(tf.constant(x), tf.constant([2, 4]), tf.ones_like(x, tf.bool))
    np.testing.assert_array_equal(kth.numpy()[:, 0], [3, 6])
    np.testing.assert_array_equal(nxt.numpy()[:, 0], [3, 0])
    y = np.random.default_rng(0).normal(size=(2, 3, 70)).astype(np.float32)
    got = kth_largest(y, 33)
    assert got.shape == (2, 3) and got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), np.sort(y, -1)[..., -33])
    assert kth_largest(tf.constant(y, tf.bfloat16), 1).dtype == tf.bfloat16


@pytest.mark.parametrize("k", [1, 7, 16, 17, 64, 65, 199, 200])
def test_eager_graph_xla_agree_for_every_path(k):
    x = tf.random.stateless_normal([3, 200], seed=[1, 2])
    want = np.sort(x.numpy(), -1)[:, ::-1][:, k - 1]
    for fn in (lambda a: kth_largest(a, k), tf.function(lambda a: kth_largest(a, k)),
               tf.function(lambda a: kth_largest(a, k), jit_compile=True),
               tf.function(lambda a: kth_largest(a, tf.constant([k, k, k])), jit_compile=True)):
        np.testing.assert_array_equal(fn(x).numpy(), want)


def test_method_argument_is_checked():
    x, valid = tf.zeros([1, 4]), tf.ones([1, 4], tf.bool)
    with pytest.raises(ValueError, match="method='sort'"):
        kth_largest_pair(x, 1, valid, method="sort")
    with pytest.raises(ValueError, match="k=4"):
        kth_largest_pair(x, 4, valid, method="topk")
    with pytest.raises(ValueError, match="method='extract' needs a static"):
        kth_largest_pair(x, tf.constant([1]), valid, method="extract")


def test_auto_extracts_only_under_xla():
    from tfcascade.ops import select

    seen = []
    real = select._extract_transposed

    def spy(*args):
        seen.append(args[1])
        return real(*args)

    x = tf.random.stateless_normal([4, 40], seed=[3, 4])
    want = np.sort(x.numpy(), -1)[:, ::-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(select, "_extract_transposed", spy)
        got = tf.function(lambda a: kth_largest_pair(a, 10, tf.ones_like(a, tf.bool)), jit_compile=True)(x)
        assert seen == [10]
        tf.function(lambda a: kth_largest_pair(a, 10, tf.ones_like(a, tf.bool)))(x)
        assert seen == [10]  # plain graph: top_k path
    np.testing.assert_array_equal(got[0].numpy()[:, 0], want[:, 9])
    np.testing.assert_array_equal(got[1].numpy()[:, 0], want[:, 10])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 60), method=st.sampled_from(["count", "topk", "extract"]),
       ties=st.booleans(), xla=st.booleans(), data=st.data())
def test_positions_are_the_lowest_indices_holding_the_pair(seed, n, method, ties, xla, data):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, (2, 3, n)) if ties else rng.normal(size=(2, 3, n))).astype(np.float32)
    valid = rng.random(x.shape) < 0.85
    valid[..., 0] = True
    k = data.draw(st.integers(1, int(valid.sum(-1).min())))
    if method == "topk" and k >= n:
        method = "count"
    fn = tf.function(lambda a, v: kth_largest_pair_and_positions(a, k, v, method=method), jit_compile=xla)
    kth, nxt, first, second = (t.numpy() for t in fn(tf.constant(x), tf.constant(valid)))
    for idx in np.ndindex(2, 3):
        want_kth, want_nxt = _np_pair(x[idx], valid[idx], k)
        assert (kth[idx][0], nxt[idx][0]) == (want_kth, want_nxt)
        holders = np.flatnonzero(valid[idx] & (x[idx] == want_kth))
        want_first = np.zeros(n, bool)
        want_first[holders[0]] = True
        others = [i for i in np.flatnonzero(valid[idx] & (x[idx] == want_nxt)) if i != holders[0]]
        want_second = np.zeros(n, bool)
        if others:
            want_second[others[0]] = True
        np.testing.assert_array_equal(first[idx], want_first)
        np.testing.assert_array_equal(second[idx], want_second)
