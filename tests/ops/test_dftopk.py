"""DFTopK against numpy; closed-form and finite-difference gradients; edge cases; dtypes; XLA parity."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.ops.dftopk import dftopk, dftopk_logits
from tfcascade.ops.hard_topk import hard_topk_mask


def _np_pair(x, valid, k):
    v = np.sort(x[valid])[::-1]
    return v[k - 1], (v[k] if k < len(v) else -np.inf)


def _np_dftopk(x, valid, k, tau):
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(len(x)):
        a, c = _np_pair(x[b], valid[b], k)
        c = a - 1 if np.isinf(c) else c
        out[b] = np.where(valid[b], (x[b] - (a + c) / 2) / tau, 0)
    return out


@pytest.mark.parametrize("tau", [1e-3, 0.5, 1.0, 100.0])
def test_forward_equals_numpy(tau):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 33))
    valid = rng.random(x.shape) < 0.8
    valid[:, :5] = True
    z = _np_dftopk(x, valid, 5, tau)
    np.testing.assert_allclose(dftopk_logits(x, 5, tau, mask=valid).numpy()[valid], z[valid], rtol=1e-12)
    f = dftopk(x, 5, tau, mask=valid).numpy()
    zv = z[valid]
    e = np.exp(-np.abs(zv))  # stable σ: no overflow, full relative precision in both tails
    np.testing.assert_allclose(f[valid], np.where(zv >= 0, 1 / (1 + e), e / (1 + e)),
                               rtol=1e-12, atol=1e-300)  # TF flushes denormals to 0
    assert np.all(f[~valid] == 0)


def test_gradient_is_the_closed_form_and_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(3, 8)))
    tau = 0.7
    for fn in (dftopk, dftopk_logits):
        theo, numer = tf.test.compute_gradient(lambda a, fn=fn: fn(a, 3, tau), [x])
        np.testing.assert_allclose(theo[0], numer[0], atol=1e-7)
    # Closed form: ∂f_i/∂x_j = f_i(1−f_i)/τ·(δ_ij − ½[j ∈ boundary]).
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = dftopk(x, 3, tau)
    jac = tape.batch_jacobian(f, x).numpy()
    for b in range(3):
        order = np.argsort(-x.numpy()[b])
        boundary = np.zeros(8)
        boundary[order[2]] = boundary[order[3]] = 1
        fb = f.numpy()[b]
        want = (fb * (1 - fb) / tau)[:, None] * (np.eye(8) - 0.5 * boundary[None, :])
        np.testing.assert_allclose(jac[b], want, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 60), data=st.data())
def test_hard_limit_equals_hard_topk_mask(seed, n, data):
    rng = np.random.default_rng(seed)
    x = rng.permutation(n).astype(np.float32)  # distinct, spacing ≥ 1: no boundary ties
    k = data.draw(st.integers(1, n - 1))
    np.testing.assert_array_equal(np.round(dftopk(x[None], k, 1e-3).numpy()), hard_topk_mask(x[None], k).numpy())


def test_ties_infinities_and_full_k_stay_finite():
    x = tf.constant([[np.inf, 1.0, 1.0, 1.0, -np.inf], [2.0, 2.0, 2.0, 2.0, 2.0]])
    for k in (1, 2, 4, 5):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = dftopk(x, k, 0.1)
            z = dftopk_logits(x, k, 0.1)
            loss = tf.reduce_sum(f) + tf.reduce_sum(z)
        grad = tape.gradient(loss, x).numpy()
        assert np.all(np.isfinite(f.numpy())) and np.all(np.isfinite(z.numpy())) and np.all(np.isfinite(grad))
    f = dftopk(x, 5, 0.01).numpy()  # k = n: everything is in
    assert np.all(f > 0.99)
    assert dftopk(x, 1, 0.01).numpy()[0, 0] > 0.99 and dftopk(x, 1, 0.01).numpy()[0, 4] < 0.01


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_dtypes_eager_function_xla_parity(dtype):
    x = tf.cast(tf.random.stateless_normal([4, 50], seed=[3, 4]), dtype)
    eager = dftopk(x, 7, 0.5)
    assert eager.dtype == dtype
    graph = tf.function(lambda a: dftopk(a, 7, 0.5))(x)
    xla = tf.function(lambda a: dftopk(a, 7, 0.5), jit_compile=True)(x)
    per_row = tf.function(lambda a: dftopk(a, tf.constant([7, 7, 7, 7]), 0.5), jit_compile=True)(x)
    for other in (graph, xla, per_row):
        np.testing.assert_allclose(tf.cast(other, tf.float64).numpy(), tf.cast(eager, tf.float64).numpy(), atol=1e-6)


def test_leading_dims_and_count_path_under_xla():
    x = tf.random.stateless_normal([2, 3, 200], seed=[5, 6])
    big_k = tf.function(lambda a: dftopk_logits(a, 150, 1.0), jit_compile=True)(x)
    np.testing.assert_allclose(big_k.numpy(), dftopk_logits(x, 150, 1.0).numpy(), atol=1e-5)
    flat = dftopk_logits(tf.reshape(x, [6, 200]), 150, 1.0)
    np.testing.assert_allclose(tf.reshape(big_k, [6, 200]).numpy(), flat.numpy(), atol=1e-5)


def test_input_is_not_modified():
    raw = np.array([[np.inf, 1.0, -np.inf, 0.5]], np.float32)
    x = tf.constant(raw)
    dftopk(x, 2)
    np.testing.assert_array_equal(x.numpy(), raw)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 80), ties=st.booleans(), data=st.data())
def test_xla_short_list_path_equals_graph_path_with_gradients(seed, n, ties, data):
    """Under XLA short lists take the extraction path; values and gradients must not change."""
    rng = np.random.default_rng(seed)
    x = tf.constant((rng.integers(-2, 3, (5, n)) if ties else rng.normal(size=(5, n))).astype(np.float32))
    valid = rng.random((5, n)) < 0.8
    valid[:, :2] = True
    k = data.draw(st.integers(1, min(16, int(valid.sum(-1).min()))))
    w = tf.constant(rng.normal(size=(5, n)).astype(np.float32))

    def value_and_grad(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            f = dftopk(a, k, temperature=0.5, mask=tf.constant(valid))
            y = tf.reduce_sum(f * w)
        return f, tape.gradient(y, a)

    f_graph, g_graph = tf.function(value_and_grad)(x)
    f_xla, g_xla = tf.function(value_and_grad, jit_compile=True)(x)
    np.testing.assert_allclose(f_xla.numpy(), f_graph.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g_xla.numpy(), g_graph.numpy(), rtol=1e-5, atol=1e-6)
