"""The exact top-k mask against a numpy stable sort."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.hard_topk import hard_topk_mask


def _np_hard(x, valid, k):
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(len(x)):
        keyed = np.where(valid[b], x[b], -np.inf)
        # Stable sort on −x: among equal scores the lower index comes first.
        order = np.argsort(-keyed, kind="stable")
        order = order[valid[b][order]][: k[b]]
        out[b, order] = 1.0
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 150), ties=st.booleans(), per_row=st.booleans())
def test_equals_stable_numpy_sort(seed, n, ties, per_row):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 2, (4, n)) if ties else rng.normal(size=(4, n))).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[rng.random(x.shape) < 0.05] = np.inf
    valid = rng.random(x.shape) < 0.8
    valid[:, 0] = True
    ks = [int(rng.integers(1, valid[b].sum() + 1)) for b in range(4)]
    k = tf.constant(ks) if per_row else min(ks)
    got = hard_topk_mask(x, k, mask=valid).numpy()
    np.testing.assert_array_equal(got, _np_hard(x, valid, ks if per_row else [min(ks)] * 4))
    np.testing.assert_array_equal(got.sum(-1), ks if per_row else [min(ks)] * 4)


def test_ties_break_to_lower_index_and_masks():
    x = np.array([[1.0, 2, 2, 2, 0], [3, 3, 3, 3, 3]], np.float32)
    np.testing.assert_array_equal(hard_topk_mask(x, 2).numpy(), [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    mask = [[1, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    np.testing.assert_array_equal(hard_topk_mask(x, tf.constant([2, 3]), mask=mask).numpy(),
                                  [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_dtypes_leading_dims_and_xla(dtype):
    x = tf.cast(tf.random.stateless_normal([2, 3, 90], seed=[1, 1]), dtype)
    for k in (5, 80):
        eager = hard_topk_mask(x, k)
        assert eager.dtype == dtype and eager.shape == x.shape
        ref = _np_hard(tf.reshape(tf.cast(x, tf.float64), [6, 90]).numpy(), np.ones([6, 90], bool), [k] * 6)
        np.testing.assert_array_equal(tf.reshape(tf.cast(eager, tf.float64), [6, 90]).numpy(), ref)
        xla = tf.function(lambda a, k=k: hard_topk_mask(a, k), jit_compile=True)(x)
        np.testing.assert_array_equal(xla.numpy(), eager.numpy())
