"""LapSum: exact-k sums, numpy bisection reference, implicit gradients, masks, dtypes."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.lapsum import lapsum_topk


def _laplace_cdf(z):
    return np.where(z <= 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))


def _numpy_lapsum(x, k, alpha, valid=None):
    """Solves Σ F((x − b)/α) = k by bisection in float64 (independent of the closed form)."""
    x = np.asarray(x, np.float64)
    valid = np.ones_like(x, bool) if valid is None else valid
    xv = x[valid]
    lo, hi = xv.min() - 60 * alpha - 1, xv.max() + 60 * alpha + 1
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if _laplace_cdf((xv - mid) / alpha).sum() > k:
            lo = mid
        else:
            hi = mid
    p = _laplace_cdf((x - 0.5 * (lo + hi)) / alpha)
    return np.where(valid, p, 0.0)


@pytest.mark.parametrize("alpha", [0.05, 0.5, 1.0, 10.0])
def test_matches_numpy_bisection(alpha):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 30))
    got = lapsum_topk(tf.constant(x), 5, alpha=alpha).numpy()
    want = np.stack([_numpy_lapsum(row, 5, alpha) for row in x])
    np.testing.assert_allclose(got, want, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), data=st.data(),
       alpha=st.sampled_from([1e-4, 1e-2, 1.0, 1e2, 1e4]), seed=st.integers(0, 2**16))
def test_sums_to_k_with_masks(n, data, alpha, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, n)).astype(np.float32) * rng.choice([0.01, 1, 100])
    valid = rng.random((3, n)) < 0.8
    valid[:, 0] = True
    n_valid = valid.sum(-1)
    k = data.draw(st.integers(1, int(n_valid.min())))
    p = lapsum_topk(x, k, alpha=alpha, mask=valid).numpy()
    assert np.all(np.isfinite(p))
    assert np.all(p[~valid] == 0)
    np.testing.assert_allclose(p.sum(-1), k, rtol=2e-5, atol=2e-5)
    assert np.all((p >= 0) & (p <= 1))


def test_gradient_matches_finite_differences_x_and_k():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(2, 9)))
    k = tf.constant([2.5, 4.0], tf.float64)
    w = tf.constant(rng.normal(size=(2, 9)))
    theo, numer = tf.test.compute_gradient(lambda a, b: lapsum_topk(a, b, alpha=0.7) * w, [x, k])
    for t, nm in zip(theo, numer):
        np.testing.assert_allclose(t, nm, atol=1e-6)


def test_gradient_formula_closed_form():
    x = tf.constant([[0.3, -1.0, 2.0, 0.9]], tf.float64)
    alpha = 0.5
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = lapsum_topk(x, 2, alpha=alpha)
    jac = tape.jacobian(p, x).numpy()[0, :, 0, :]
    # Solve b independently, then apply ∂p_i/∂x_j = g_i δ_ij − g_i g_j / Σ g.
    pr = _numpy_lapsum(x.numpy()[0], 2, alpha)
    b = np.mean([xi - alpha * (np.log(2 * pi) if pi <= 0.5 else -np.log(2 * (1 - pi)))
                 for xi, pi in zip(x.numpy()[0], pr)])
    g = 0.5 * np.exp(-np.abs((x.numpy()[0] - b) / alpha)) / alpha
    want = np.diag(g) - np.outer(g, g) / g.sum()
    np.testing.assert_allclose(jac, want, atol=1e-8)


def test_tiny_alpha_is_hard_and_finite():
    x = tf.constant([[3.0, 1.0, 2.0, 0.0, 5.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = lapsum_topk(x, 2, alpha=1e-4)
    np.testing.assert_allclose(p.numpy(), [[1, 0, 0, 0, 1]], atol=1e-5)
    assert np.all(np.isfinite(tape.gradient(p, x).numpy()))


def test_infinities_ties_and_input_not_modified():
    raw = np.array([[np.inf, 1.0, 1.0, -np.inf, 1.0]], np.float32)
    x = tf.constant(raw)
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = lapsum_topk(x, 2, alpha=0.1)
    assert np.all(np.isfinite(p.numpy())) and np.all(np.isfinite(tape.gradient(p, x).numpy()))
    np.testing.assert_allclose(p.numpy().sum(), 2, atol=1e-5)
    np.testing.assert_equal(x.numpy(), raw)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_dtypes_and_xla_parity(dtype):
    x = tf.cast(tf.constant(np.random.default_rng(3).normal(size=(5, 12))), dtype)
    eager = lapsum_topk(x, 4, alpha=0.5)
    assert eager.dtype == dtype
    graph = tf.function(lambda a: lapsum_topk(a, 4, alpha=0.5))(x)
    xla = tf.function(lambda a: lapsum_topk(a, 4, alpha=0.5), jit_compile=True)(x)
    tol = 1e-2 if dtype in (tf.float16, tf.bfloat16) else 1e-5
    np.testing.assert_allclose(tf.cast(graph, tf.float64), tf.cast(eager, tf.float64), atol=tol)
    np.testing.assert_allclose(tf.cast(xla, tf.float64), tf.cast(eager, tf.float64), atol=tol)


def test_per_row_k():
    x = tf.constant(np.random.default_rng(4).normal(size=(3, 8)), tf.float32)
    p = lapsum_topk(x, tf.constant([1, 3, 7]), alpha=0.3).numpy()
    np.testing.assert_allclose(p.sum(-1), [1, 3, 7], atol=1e-5)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"k": 0}, ValueError, "k=0"),
    ({"k": 9}, ValueError, "k=9"),
    ({"k": 2.5}, TypeError, "k=2.5"),
    ({"k": 2, "alpha": 0.0}, ValueError, "alpha=0.0"),
    ({"k": 2, "alpha": -1.0}, ValueError, "alpha=-1.0"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        lapsum_topk(tf.zeros([2, 8]), **kwargs)


def test_nan_and_mask_errors():
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        lapsum_topk(tf.constant([[1.0, np.nan, 0.0]]), 1)
    with pytest.raises(ValueError, match="mask"):
        lapsum_topk(tf.zeros([2, 4]), 1, mask=tf.ones([2, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="valid items"):
        lapsum_topk(tf.zeros([1, 4]), 3, mask=[[1, 1, 0, 0]])
