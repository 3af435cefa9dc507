"""O(n) selection of order statistics without sorting.

``kth_largest_pair`` returns x_[k] and x_[k+1] (the k-th and (k+1)-th largest values of each
row, ties counted with multiplicity, masked items never counted) by **counting passes**, not a
sort: float32 (float64) values are mapped to order-preserving int32 (int64) keys

    key(x) = bits(x)            if bits(x) ≥ 0   (x ≥ +0)
             bits(x) ^ 0x7FF…F  otherwise         (x < 0: flip the magnitude bits)

and a per-row bracket [lo, hi] ∋ key(x_[k]) is bisected with one fused compare-and-count
``c(t) = #{i : key_i ≥ t}`` per pass. A row stops as soon as a pass finds c(t) = k exactly
(then x_[k] = min{x : key ≥ t} and x_[k+1] = max{x : key < t}, two masked reductions) or the
bracket closes (ties across the boundary: x_[k] = x_[k+1]). Each pass is O(n); at most 32 (64)
passes, typically ~log2(n) + a few for continuous scores. For a small static k,
``tf.math.top_k(x, k + 1)`` followed by reductions only is used instead (cheaper there;
measured on TF 2.21: never slice columns out of top_k values under XLA). Under XLA, short lists
with a very small static k use **extraction** instead: k + 1 rounds of "drop the row maximum
and all its copies", O(k·n) in fused reductions over an items-major layout — XLA's CPU TopK is
a sort and costs more there (bench/topk.py).
"""

from __future__ import annotations

import tensorflow as tf

from tfcascade.ops._validate import check_k, check_mask, check_scores, static_k

# Below this k the top_k(k + 1) path is used (measured in bench/topk.py).
TOPK_PATH_MAX_K = 64
# Under XLA, extraction (k + 1 max-reductions) replaces top_k for k and n up to these.
EXTRACT_MAX_K = 16
EXTRACT_MAX_N = 256
METHODS = ("auto", "topk", "count", "extract")


def order_keys(x: tf.Tensor) -> tf.Tensor:
    """float32 → int32 (float64 → int64) keys with key(a) < key(b) ⇔ a < b (−0 just below +0)."""
    int_dtype = tf.int64 if x.dtype == tf.float64 else tf.int32
    bits = tf.bitcast(x, int_dtype)
    magnitude = tf.constant(int_dtype.max, int_dtype)
    return tf.where(bits >= 0, bits, tf.bitwise.bitwise_xor(bits, magnitude))


def from_keys(keys: tf.Tensor, float_dtype: tf.DType) -> tf.Tensor:
    """Inverse of :func:`order_keys`: int32 → float32, int64 → float64."""
    magnitude = tf.constant(keys.dtype.max, keys.dtype)
    return tf.bitcast(tf.where(keys >= 0, keys, tf.bitwise.bitwise_xor(keys, magnitude)), float_dtype)


def _second_smallest(values: tf.Tensor) -> tf.Tensor:
    """Second smallest of each row with multiplicity, by reductions only."""
    smallest = tf.reduce_min(values, axis=-1, keepdims=True)
    ties = tf.reduce_sum(tf.cast(values == smallest, tf.int32), axis=-1, keepdims=True)
    above = tf.reduce_min(tf.where(values > smallest, values, tf.fill(tf.shape(values), tf.constant(float("inf"), values.dtype))),
                          axis=-1, keepdims=True)
    return tf.where(ties >= 2, smallest, above)


def _pair_by_topk(x: tf.Tensor, k: int, valid: tf.Tensor):
    low = tf.fill(tf.shape(x), tf.constant(-float("inf"), x.dtype))
    values = tf.math.top_k(tf.where(valid, x, low), k=k + 1, sorted=False).values
    return _second_smallest(values), tf.reduce_min(values, axis=-1, keepdims=True)


def _extract_transposed(x: tf.Tensor, k: int, valid: tf.Tensor):
    """x_[k], x_[k+1] and their positions by k + 1 rounds of "drop the row maximum".

    The lists are laid out items-major (``[n, rows]``) so that every round is a reduction
    across rows of contiguous vectors, which XLA's CPU backend vectorises (row-major
    reductions over short rows it does not). Each round drops the maximum and every copy of
    it, giving the k + 1 largest *distinct* values m_1 > … > m_{k+1}. Without ties among the
    k + 1 largest items (checked with one count: #{x ≥ m_{k+1}} = k + 1 and m_{k+1} > −inf)
    x_[k] = m_k and x_[k+1] = m_{k+1}; otherwise one fused pass counts c_j = #{x ≥ m_j} and
    x_[k] is the first m_j with c_j ≥ k (x_[k+1]: c_j ≥ k + 1).

    Returns:
      ``(kth, nxt, first, second)``: ``[..., 1]`` values and ``[..., n]`` bool one-hots of
      [k] (lowest index holding x_[k]) and [k+1] (lowest other index holding x_[k+1]).
    """
    shape = tf.shape(x)
    n = x.shape[-1]
    xt = tf.transpose(tf.reshape(x, [-1, n]))  # [n, rows]
    vt = tf.transpose(tf.reshape(valid, [-1, n]))
    ninf = tf.constant(-float("inf"), x.dtype)
    alive = tf.where(vt, xt, ninf)
    tops = []
    for _ in range(k + 1):
        top = tf.reduce_max(alive, axis=0, keepdims=True)
        tops.append(top)
        alive = tf.where(alive == top, ninf, alive)
    at_least_last = tf.reduce_sum(tf.cast(tf.logical_and(vt, xt >= tops[-1]), tf.int32), axis=0)
    # m_{k+1} = −inf: fewer than k + 1 distinct values (or −inf scores): count instead.
    distinct = tf.reduce_all(tf.logical_and(at_least_last == k + 1, tops[-1][0] > ninf))

    def without_ties():
        return tops[-2], tops[-1], tf.logical_and(vt, xt == tops[-2]), tf.logical_and(vt, xt == tops[-1])

    def with_ties():
        m = tf.concat(tops, 0)  # [k + 1, rows], decreasing
        ge = tf.logical_and(vt[:, None, :], xt[:, None, :] >= m[None])  # [n, k + 1, rows]
        counts = tf.reduce_sum(tf.cast(ge, tf.int32), axis=0)
        kth = tf.reduce_max(tf.where(counts >= k, m, ninf), axis=0, keepdims=True)
        nxt = tf.reduce_max(tf.where(counts >= k + 1, m, ninf), axis=0, keepdims=True)
        first = _first_true(tf.logical_and(vt, xt == kth), axis=0)
        second = _first_true(tf.logical_and(tf.logical_and(vt, xt == nxt), tf.logical_not(first)), axis=0)
        return kth, nxt, first, second

    kth, nxt, first, second = tf.cond(distinct, without_ties, with_ties)
    rows_shape = tf.concat([shape[:-1], [1]], 0)
    return (tf.reshape(tf.transpose(kth), rows_shape), tf.reshape(tf.transpose(nxt), rows_shape),
            tf.reshape(tf.transpose(first), shape), tf.reshape(tf.transpose(second), shape))


def _first_true(hit: tf.Tensor, axis: int) -> tf.Tensor:
    """Bool ``hit`` with only the first True along ``axis`` kept (all False if none)."""
    axis %= hit.shape.rank
    n = tf.shape(hit)[axis]
    position = tf.reshape(tf.range(n), [-1] + [1] * (hit.shape.rank - 1 - axis))  # broadcasts along axis
    return position == tf.reduce_min(tf.where(hit, position, n), axis=axis, keepdims=True)


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (``jit_compile=True``)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private API moved: fall back to the paths that suit both
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _pair_by_counting(x: tf.Tensor, k: tf.Tensor, valid: tf.Tensor):
    keys = order_keys(x)
    key_dtype = keys.dtype
    keys = tf.where(valid, keys, tf.fill(tf.shape(keys), tf.constant(key_dtype.min, key_dtype)))
    k = tf.cast(tf.broadcast_to(tf.reshape(k, tf.concat([tf.shape(k), tf.ones([tf.rank(x) - tf.rank(k)], tf.int32)], 0)),
                                tf.concat([tf.shape(x)[:-1], [1]], 0)), tf.int32)
    big = tf.fill(tf.shape(keys), tf.constant(key_dtype.max, key_dtype))
    small = tf.fill(tf.shape(keys), tf.constant(key_dtype.min, key_dtype))
    # Bracket from the row's valid extremes: lo ≤ key(x_[k]) ≤ hi (held in int64).
    lo = tf.cast(tf.reduce_min(tf.where(valid, keys, big), axis=-1, keepdims=True), tf.int64)
    hi = tf.cast(tf.reduce_max(tf.where(valid, keys, small), axis=-1, keepdims=True), tf.int64)
    found = tf.zeros_like(lo, tf.bool)
    split = hi  # a t with count(key >= t) == k, once found

    def cond(lo, hi, found, split):
        return tf.reduce_any(tf.logical_and(tf.logical_not(found), lo < hi))

    def body(lo, hi, found, split):
        # ceil((lo + hi) / 2) without int64 overflow.
        one = tf.ones_like(lo)
        mid = (tf.bitwise.right_shift(lo, one) + tf.bitwise.right_shift(hi, one)
               + (tf.bitwise.bitwise_and(lo, one) + tf.bitwise.bitwise_and(hi, one) + 1) // 2)
        count = tf.reduce_sum(tf.cast(keys >= tf.cast(mid, key_dtype), tf.int32), axis=-1, keepdims=True)
        active = tf.logical_and(tf.logical_not(found), lo < hi)
        exact = tf.logical_and(active, count == k)
        new_lo = tf.where(tf.logical_and(active, count >= k), mid, lo)
        new_hi = tf.where(tf.logical_and(active, count < k), mid - 1, hi)
        return new_lo, new_hi, tf.logical_or(found, exact), tf.where(exact, mid, split)

    lo, hi, found, split = tf.while_loop(cond, body, (lo, hi, found, split),
                                         maximum_iterations=65, parallel_iterations=1)
    # Closed bracket: lo = key(x_[k]); count how many share it to decide x_[k+1].
    t = tf.cast(tf.where(found, split, lo), key_dtype)
    inf = tf.constant(float("inf"), x.dtype)
    at_or_above = tf.logical_and(valid, keys >= t)
    kth = tf.reduce_min(tf.where(at_or_above, x, inf), axis=-1, keepdims=True)
    below = tf.logical_and(valid, keys < t)
    nxt = tf.reduce_max(tf.where(below, x, -inf), axis=-1, keepdims=True)
    count_ge = tf.reduce_sum(tf.cast(at_or_above, tf.int32), axis=-1, keepdims=True)
    nxt = tf.where(tf.logical_and(tf.logical_not(found), count_ge >= k + 1), kth, nxt)
    return kth, nxt


def kth_largest_pair(x: tf.Tensor, k, valid: tf.Tensor, method: str = "auto"):
    """(x_[k], x_[k+1]) per row, each ``[..., 1]``; x_[k+1] = −inf when k = #valid.

    Args:
      x: float32/float64 ``[..., n]`` without NaN (checked by the callers).
      k: Python int or int32 tensor broadcastable to the batch shape; 1 ≤ k ≤ #valid.
      valid: bool ``[..., n]``.
      method: ``auto`` (under XLA extraction for static k ≤ EXTRACT_MAX_K and n ≤
        EXTRACT_MAX_N; else top_k for static k ≤ TOPK_PATH_MAX_K; else counting), ``topk``
        (static k < n only), ``extract`` (static k only) or ``count``.
    """
    kth, nxt, _ = _select(x, k, valid, method)
    return kth, nxt


def kth_largest_pair_and_positions(x: tf.Tensor, k, valid: tf.Tensor, method: str = "auto"):
    """:func:`kth_largest_pair` plus the boundary positions.

    Returns:
      ``(kth, nxt, first, second)``: ``first`` / ``second`` are ``[..., n]`` bool one-hots of
      [k] (the lowest index holding x_[k]) and [k+1] (the lowest other index holding x_[k+1];
      all False when k = #valid).
    """
    kth, nxt, positions = _select(x, k, valid, method)
    if positions is None:
        first = _first_true(tf.logical_and(valid, x == kth), axis=-1)
        second = _first_true(tf.logical_and(tf.logical_and(valid, x == nxt), tf.logical_not(first)), axis=-1)
        positions = first, second
    return (kth, nxt, *positions)


def _select(x, k, valid, method):
    """(kth, nxt, positions or None): the extraction path finds the positions on the way."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    static_k = isinstance(k, int)
    n = x.shape[-1]
    if method == "extract" and not (static_k and n is not None):
        raise ValueError(f"method='extract' needs a static (Python int) k and list length, got k={k!r}, n={n}")
    if method == "auto" and static_k and n is not None and k <= EXTRACT_MAX_K and n <= EXTRACT_MAX_N \
            and in_xla_context():
        method = "extract"
    if method == "extract":
        kth, nxt, first, second = _extract_transposed(x, k, valid)
        return kth, nxt, (first, second)
    use_topk = static_k and (method == "topk" or (method == "auto" and k <= TOPK_PATH_MAX_K)) and (
        n is not None and k < n)
    if method == "topk" and not use_topk:
        raise ValueError(f"method='topk' needs a static k < n, got k={k!r}, n={n}")
    if use_topk:
        return (*_pair_by_topk(x, k, valid), None)
    return (*_pair_by_counting(x, tf.convert_to_tensor(k, tf.int32), valid), None)


def kth_largest(scores, k, mask=None) -> tf.Tensor:
    """x_[k], the k-th largest score of each row (ties counted with multiplicity).

    Args:
      scores: float ``[..., n]`` (no NaN).
      k: Python int or int tensor of the batch shape, 1 ≤ k ≤ #valid items.
      mask: optional ``[..., n]`` validity; masked items never count.

    Returns:
      ``[...]`` in the dtype of ``scores``.
    """
    k = static_k(k)
    x, out_dtype = check_scores(scores)
    mask = check_mask(mask, x)
    k_t = check_k(k, x, mask)
    valid = tf.ones_like(x, tf.bool) if mask is None else mask
    kth, _ = kth_largest_pair(x, k if isinstance(k, int) else k_t, valid)
    return tf.cast(tf.squeeze(kth, -1), out_dtype)
