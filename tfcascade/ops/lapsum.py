"""LapSum soft top-k (Struski et al., ICML 2025, arXiv 2503.06242).

With the Laplace CDF F(z) = ½eᶻ (z ≤ 0), 1 − ½e⁻ᶻ (z > 0), the soft membership is

    p_i = F((x_i − b) / α),   with the scalar b solved so that Σ_i p_i = k exactly.

Solving for b: sort the valid scores ascending, y_1 ≤ … ≤ y_n. For b in [y_m, y_{m+1}),
with L_m = log Σ_{i≤m} e^{y_i/α} and R_m = log Σ_{i>m} e^{−y_i/α},

    Σ p = ½e^{L_m − b/α} + (n − m) − ½e^{R_m + b/α},

a quadratic in u = e^{b/α}. The bracketing m is the number of breakpoints y_j whose sum is
≥ k (the sum decreases in b); the root is taken in log space (no overflow for any α):
with c = n − m − k and h = ½·logaddexp(2 log|c|, L + R) = log √(c² + e^{L+R}),
b/α = logaddexp(log c, h) − R for c ≥ 0, and b/α = L − logaddexp(h, log(−c)) for c < 0.
O(n log n) for the sort, everything else O(n).

Backward by implicit differentiation (Σ p = k fixes b), with g_i = ½e^{−|z_i|}/α:

    ∂p_i/∂x_j = g_i δ_ij − g_i g_j / Σ_l g_l,     ∂p_i/∂k = g_i / Σ_l g_l.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from tfcascade.ops._common import as_dtype, clamp_infinite, valid_mask
from tfcascade.ops._validate import _assert, check_k, check_mask, check_positive, check_scores


def laplace_cdf(z: tf.Tensor) -> tf.Tensor:
    """F(z) = ½eᶻ for z ≤ 0, 1 − ½e⁻ᶻ for z > 0 (computed without overflow)."""
    e = 0.5 * tf.exp(-tf.abs(z))
    return tf.where(z <= 0, e, 1.0 - e)


def _solve_threshold(x: tf.Tensor, valid: tf.Tensor, k: tf.Tensor, alpha) -> tf.Tensor:
    """b/α per row such that Σ_valid F(x/α − b/α) = k.  Shapes: x [..., n], k [...] → [..., 1]."""
    dtype = x.dtype
    neg_inf = tf.constant(-float("inf"), dtype)
    s = x / alpha
    big = tf.reduce_max(tf.abs(s), axis=-1, keepdims=True) + 1.0
    order = tf.argsort(tf.where(valid, s, big), axis=-1, stable=True)
    y = tf.gather(s, order, batch_dims=len(x.shape) - 1)
    v = tf.gather(valid, order, batch_dims=len(x.shape) - 1)
    n_valid = tf.reduce_sum(tf.cast(valid, dtype), axis=-1, keepdims=True)
    kf = tf.cast(k, dtype)[..., None]
    pos = tf.where(v, y, neg_inf)
    neg = tf.where(v, -y, neg_inf)
    lse_prefix = tf.math.cumulative_logsumexp(pos, axis=-1)  # L_j, j = 1..n (inclusive)
    lse_suffix = tf.math.cumulative_logsumexp(neg, axis=-1, exclusive=True, reverse=True)  # R_j
    j = tf.range(1, tf.shape(x)[-1] + 1, dtype=dtype)
    y_safe = tf.where(v, y, tf.zeros_like(y))
    # Σp at b = y_j: each exponent is ≤ 0, so nothing overflows.
    sum_at = (0.5 * tf.exp(lse_prefix - y_safe) + (n_valid - j)
              - 0.5 * tf.exp(lse_suffix + y_safe))
    m = tf.reduce_sum(tf.cast(v & (sum_at >= kf), tf.int32), axis=-1, keepdims=True)
    # L_m (m = 0 → −inf) and R_m over the valid items above the bracket.
    prefix0 = tf.concat([tf.fill(tf.shape(lse_prefix[..., :1]), neg_inf), lse_prefix], axis=-1)
    suffix0 = tf.concat(
        [tf.reduce_logsumexp(neg, axis=-1, keepdims=True), lse_suffix], axis=-1)
    big_l = tf.gather(prefix0, m, batch_dims=len(x.shape) - 1)
    big_r = tf.gather(suffix0, m, batch_dims=len(x.shape) - 1)
    c = n_valid - tf.cast(m, dtype) - kf
    log_abs_c = tf.math.log(tf.abs(c))
    h = 0.5 * tf.experimental.numpy.logaddexp(2.0 * log_abs_c, big_l + big_r)
    pos_root = tf.experimental.numpy.logaddexp(log_abs_c, h) - big_r
    neg_root = big_l - tf.experimental.numpy.logaddexp(h, log_abs_c)
    return tf.where(c >= 0, pos_root, neg_root)


def _check_float_k(k, x: tf.Tensor, mask) -> tf.Tensor:
    k = tf.convert_to_tensor(k)
    batch_shape = x.shape[:-1]
    if k.shape.rank not in (0, None) and not k.shape.is_compatible_with(batch_shape):
        raise ValueError(f"k must be a scalar or have the batch shape {batch_shape}, got k.shape={k.shape}")
    valid = tf.cast(tf.shape(x)[-1], x.dtype) if mask is None else tf.reduce_sum(tf.cast(mask, x.dtype), -1)
    k = tf.cast(k, x.dtype)
    k = _assert(tf.reduce_all(k > 0), "k must be > 0", k, k)
    return _assert(tf.reduce_all(k <= valid), "k must be <= the number of valid items", k, k)


def lapsum_topk(scores, k, alpha: float = 1.0, mask=None) -> tf.Tensor:
    """Soft top-k membership whose row sums equal k exactly (LapSum).

    Args:
      scores: float tensor ``[..., n]`` (float16/bfloat16/float32/float64).
      k: Python int, int tensor of the batch shape, or a float tensor (then the gradient with
        respect to k is returned too: ∂p_i/∂k = g_i / Σ g).
      alpha: Laplace scale α > 0 (smaller is closer to the hard top-k).
      mask: optional ``[..., n]`` bool/0-1, False = padding (membership 0, no gradient).

    Returns:
      ``[..., n]`` memberships in [0, 1] with Σ_valid p = k, in the dtype of ``scores``.
    """
    x, out_dtype = check_scores(scores)
    alpha = check_positive(alpha, "alpha")
    mask = check_mask(mask, x)
    k_is_float = not isinstance(k, numbers.Number) and tf.convert_to_tensor(k).dtype.is_floating
    if isinstance(k, float):
        raise TypeError(f"k must be an integer or a float tensor, got k={k!r}")
    k_t = _check_float_k(k, x, mask) if k_is_float else tf.cast(check_k(k, x, mask), x.dtype)
    k_t = tf.broadcast_to(k_t, tf.shape(x)[:-1])
    valid = valid_mask(x, mask)
    x = clamp_infinite(x, valid)
    alpha_t = as_dtype(alpha, x.dtype)
    p = _lapsum(x, k_t, alpha_t, valid)
    return tf.cast(p, out_dtype)


def _lapsum(x, k, alpha, valid):
    @tf.custom_gradient
    def forward(x, k):
        b = tf.stop_gradient(_solve_threshold(x, valid, k, alpha))
        z = x / alpha - b
        vf = tf.cast(valid, x.dtype)
        p = laplace_cdf(z) * vf

        def grad(upstream):
            g = 0.5 * tf.exp(-tf.abs(z)) / alpha * vf
            g_sum = tf.reduce_sum(g, axis=-1, keepdims=True)
            safe = tf.maximum(g_sum, tf.constant(1e-30, x.dtype))
            vg = tf.reduce_sum(upstream * g, axis=-1, keepdims=True) / safe
            dx = (upstream * g - g * vg) * vf
            dk = tf.squeeze(vg, -1)  # ∂p_i/∂k = g_i / Σ g
            return dx, dk
        return p, grad

    return forward(x, k)
