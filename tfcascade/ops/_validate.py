"""Input checks shared by the top-K operators.

Static problems (wrong rank, k <= 0, k > n, non-integer k, temperature <= 0) raise at trace
time with the argument's name and value. Data-dependent problems (NaN scores, k larger than
the number of valid items of a row) raise ``tf.errors.InvalidArgumentError`` eagerly and
through ``tf.debugging`` assertions in graphs. XLA compiles the assertions away; the eager and
``tf.function`` paths are where they bite.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """float64 stays float64; every narrower float computes in float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


def check_scores(scores, name: str = "scores", min_rank: int = 1) -> tuple[tf.Tensor, tf.DType]:
    """Converts ``scores`` to a float tensor in its compute dtype and checks it.

    Returns:
      (scores in float32 or float64, the input's dtype to cast results back to).
    """
    scores = tf.convert_to_tensor(scores)
    if scores.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a floating tensor, got {name}.dtype={scores.dtype.name}")
    rank = scores.shape.rank
    if rank is not None and rank < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank} ([..., n]), got {name}.shape={scores.shape}"
        )
    if rank is not None and scores.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one item, got {name}.shape={scores.shape}")
    out_dtype = scores.dtype
    x = tf.cast(scores, compute_dtype(out_dtype))
    x = _assert_no_nan(x, name)
    return x, out_dtype


def _assert_no_nan(x: tf.Tensor, name: str) -> tf.Tensor:
    has_nan = tf.reduce_any(tf.math.is_nan(x))
    if tf.executing_eagerly():
        if bool(has_nan):
            raise tf.errors.InvalidArgumentError(
                None, None, f"{name} contains NaN; tfcascade refuses to spread NaN (use -inf or a mask for padding)"
            )
        return x
    check = tf.debugging.Assert(tf.logical_not(has_nan), [f"{name} contains NaN"], name=f"{name}_no_nan")
    with tf.control_dependencies([check]):
        return tf.identity(x)


def check_mask(mask, scores: tf.Tensor, name: str = "mask") -> tf.Tensor | None:
    """Returns ``mask`` as a boolean tensor of ``scores``' shape, or None."""
    if mask is None:
        return None
    mask = tf.convert_to_tensor(mask)
    if not scores.shape.is_compatible_with(mask.shape):
        raise ValueError(
            f"{name} must have the shape of the scores {scores.shape}, got {name}.shape={mask.shape}"
        )
    return tf.cast(mask, tf.bool) if mask.dtype != tf.bool else mask


def check_k(k, scores: tf.Tensor, mask: tf.Tensor | None = None, name: str = "k") -> tf.Tensor:
    """Checks ``k`` (Python int or int tensor of the batch shape) against the list length.

    Returns:
      ``k`` as an int32 tensor broadcastable to the batch shape ``scores.shape[:-1]``.
    """
    n_static = scores.shape[-1]
    if isinstance(k, (bool, np.bool_)) or (
        isinstance(k, numbers.Number) and not isinstance(k, numbers.Integral)
    ):
        raise TypeError(f"{name} must be an integer, got {name}={k!r}")
    if isinstance(k, numbers.Integral):
        k = int(k)
        if k <= 0:
            raise ValueError(f"{name} must be a positive integer, got {name}={k}")
        if n_static is not None and k > n_static:
            raise ValueError(
                f"{name} must be <= the number of items n={n_static}, got {name}={k}"
            )
        k_t = tf.constant(k, tf.int32)
    else:
        k_t = tf.convert_to_tensor(k)
        if not k_t.dtype.is_integer:
            raise TypeError(f"{name} must be an integer tensor, got {name}.dtype={k_t.dtype.name}")
        k_t = tf.cast(k_t, tf.int32)
        batch_shape = scores.shape[:-1]
        if k_t.shape.rank not in (0, None) and not k_t.shape.is_compatible_with(batch_shape):
            raise ValueError(
                f"{name} must be a scalar or have the batch shape {batch_shape}, got {name}.shape={k_t.shape}"
            )
        k_t = _assert(tf.reduce_all(k_t > 0), f"{name} must be positive", k_t, k_t)
    valid = tf.shape(scores)[-1] if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1)
    k_t = _assert(
        tf.reduce_all(k_t <= valid),
        f"{name} must be <= the number of valid items in every row",
        k_t,
        tf.stack([tf.reduce_max(k_t), tf.reduce_min(valid)]),
    )
    return k_t


def static_k(k):
    """``k`` as a Python int when it is a (numpy) integer, else unchanged (a tensor)."""
    if isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_)):
        return int(k)
    return k


def check_positive(value, name: str) -> float | tf.Tensor:
    """Checks a temperature-like argument is > 0 (Python numbers statically, tensors by assertion)."""
    if isinstance(value, numbers.Number):
        if isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
        return float(value)
    value = tf.convert_to_tensor(value)
    return _assert(tf.reduce_all(value > 0), f"{name} must be > 0", value, value)


def _assert(condition: tf.Tensor, message: str, out: tf.Tensor, data: tf.Tensor) -> tf.Tensor:
    if tf.executing_eagerly():
        if not bool(condition):
            raise tf.errors.InvalidArgumentError(None, None, f"{message}, got {data.numpy()}")
        return out
    check = tf.debugging.Assert(condition, [message, data])
    with tf.control_dependencies([check]):
        return tf.identity(out)
