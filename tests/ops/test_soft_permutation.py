"""NeuralSort / SoftSort against their numpy formulas; stochasticity; top-q membership."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.soft_permutation import neural_sort, soft_sort, topq_membership


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def _np_neural_sort(x, tau):
    n = len(x)
    a1 = np.abs(x[:, None] - x[None, :]).sum(1)
    rows = [(n + 1 - 2 * r) * x - a1 for r in range(1, n + 1)]
    return _softmax(np.stack(rows) / tau)


def _np_soft_sort(x, tau):
    s = np.sort(x)[::-1]
    return _softmax(-np.abs(s[:, None] - x[None, :]) / tau)


@pytest.mark.parametrize("fn,ref", [(neural_sort, _np_neural_sort), (soft_sort, _np_soft_sort)])
@pytest.mark.parametrize("tau", [0.1, 1.0, 50.0])
def test_matches_numpy(fn, ref, tau):
    x = np.random.default_rng(0).normal(size=(3, 7))
    got = fn(tf.constant(x), tau).numpy()
    for row, p in zip(x, got):
        np.testing.assert_allclose(p, ref(row, tau), atol=1e-10)


@pytest.mark.parametrize("fn,ref", [(neural_sort, _np_neural_sort), (soft_sort, _np_soft_sort)])
def test_mask_equals_formula_on_valid_items(fn, ref):
    x = np.random.default_rng(1).normal(size=6)
    valid = np.array([1, 0, 1, 1, 0, 1], bool)
    p = fn(tf.constant(x[None]), 0.5, mask=valid[None]).numpy()[0]
    nv = valid.sum()
    np.testing.assert_allclose(p[:nv][:, valid], ref(x[valid], 0.5), atol=1e-10)
    assert np.all(p[:nv][:, ~valid] == 0)
    np.testing.assert_allclose(p[nv:][:, ~valid], 0.5)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 25), seed=st.integers(0, 2**16), tau=st.sampled_from([0.01, 1.0, 100.0]))
def test_row_stochastic_and_hard_limit(n, seed, tau):
    rng = np.random.default_rng(seed)
    x = rng.permutation(n).astype(np.float64)  # distinct scores, spacing 1
    for fn in (neural_sort, soft_sort):
        p = fn(tf.constant(x[None]), tau).numpy()[0]
        assert np.all(np.isfinite(p))
        np.testing.assert_allclose(p.sum(-1), 1, atol=1e-9)
    # τ → 0: argmax of row r is the item of rank r, and the matrix is doubly stochastic.
    for fn in (neural_sort, soft_sort):
        p = fn(tf.constant(x[None]), 1e-3).numpy()[0]
        np.testing.assert_array_equal(p.argmax(-1), np.argsort(-x))
        np.testing.assert_allclose(p.sum(-2), 1, atol=1e-6)


def test_topq_membership_formula_and_gradient_stop():
    p = tf.constant(np.random.default_rng(2).dirichlet(np.ones(5), size=5)[None])
    got = topq_membership(p, 2).numpy()[0]
    want = p.numpy()[0][:2].sum(0) / p.numpy()[0].sum(0)
    np.testing.assert_allclose(got, want)
    with tf.GradientTape() as tape:
        tape.watch(p)
        out = tf.reduce_sum(topq_membership(p, 2))
    grad = tape.gradient(out, p).numpy()[0]
    # Only the numerator carries gradient: rows > q get none.
    assert np.all(grad[2:] == 0)
    np.testing.assert_allclose(grad[:2], np.broadcast_to(1 / p.numpy()[0].sum(0), (2, 5)))


@pytest.mark.parametrize("fn", [neural_sort, soft_sort])
def test_gradient_finite_differences(fn):
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 5)))
    theo, numer = tf.test.compute_gradient(lambda a: fn(a, 0.7), [x])
    np.testing.assert_allclose(theo[0], numer[0], atol=1e-6)


@pytest.mark.parametrize("fn", [neural_sort, soft_sort])
def test_infinities_ties_xla_dtypes(fn):
    x = tf.constant([[np.inf, 1.0, 1.0, -np.inf]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = fn(x, 1.0)
    assert np.all(np.isfinite(p.numpy())) and np.all(np.isfinite(tape.gradient(p, x).numpy()))
    assert p.numpy()[0, 0].argmax() == 0 and p.numpy()[0, 3].argmax() == 3
    y = tf.random.stateless_normal([2, 6], seed=[1, 2])
    xla = tf.function(lambda a: fn(a, 0.3), jit_compile=True)(y)
    np.testing.assert_allclose(xla.numpy(), fn(y, 0.3).numpy(), atol=1e-6)
    assert fn(tf.cast(y, tf.bfloat16), 0.3).dtype == tf.bfloat16


def test_bad_arguments():
    with pytest.raises(ValueError, match="tau=0"):
        neural_sort(tf.zeros([1, 3]), 0)
    with pytest.raises(ValueError, match="rank"):
        soft_sort(tf.constant(1.0), 1.0)
    with pytest.raises(ValueError, match="q=4"):
        topq_membership(tf.eye(3)[None], 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        neural_sort(tf.constant([[np.nan, 1.0]]), 1.0)
