"""Exact maximum-inner-product top-k over a large item corpus, in bounded memory.

    top-k_j  ⟨u_b, v_j⟩,   j = 1 … M

The corpus ``V [M, d]`` is scored chunk by chunk (``chunk_size`` items at a time) and each
chunk's own top-k is merged into the running top-k, so memory is O(B · chunk_size) instead of
O(B · M). Within a chunk the top-k is taken in two rounds — the top-k of every block of
``block_size`` scores (rows the TopK kernel spreads over the CPU cores), then the top-k of
those — which holds the chunk's top-k because each of its members is in its block's top-k.
The result equals ``tf.math.top_k(u @ Vᵀ, k)`` exactly, ties included (lower corpus row
first): at every merge, candidates from lower rows come first.
"""

from __future__ import annotations

import tensorflow as tf

CHUNK_SIZE = 262144  # B · 1 MiB of scores per chunk
BLOCK_SIZE = 16384  # measured fastest on 2 cores at M = 1M (bench/results/serving.md)


def brute_force_top_k(queries: tf.Tensor, corpus: tf.Tensor, k, chunk_size: int = CHUNK_SIZE,
                      block_size: int = BLOCK_SIZE) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-k corpus rows by inner product with each query.

    Args:
      queries: ``[B, d]``.
      corpus: ``[M, d]`` item vectors (M may be 0).
      k: items per query (int or scalar tensor); clipped to M.
      chunk_size: corpus rows scored at a time (> 0); bounds memory at B · chunk_size scores.
      block_size: scores per block of the two-round top-k within a chunk (> 0).

    Returns:
      (``scores [B, min(k, M)]`` best first, ``rows [B, min(k, M)]`` int64 corpus rows).
    """
    for name, value in (("chunk_size", chunk_size), ("block_size", block_size)):
        if int(value) <= 0:
            raise ValueError(f"{name} must be > 0, got {name}={value}")
    queries = tf.convert_to_tensor(queries, tf.float32)
    corpus = tf.convert_to_tensor(corpus, tf.float32)
    m = tf.shape(corpus, out_type=tf.int64)[0]
    k = tf.minimum(tf.cast(k, tf.int64), m)
    chunk = tf.constant(int(chunk_size), tf.int64)

    def body(start, best_scores, best_rows):
        scores = tf.matmul(queries, corpus[start: start + chunk], transpose_b=True)
        top, at = _top_k_in_blocks(scores, k, int(block_size))
        merged = tf.concat([best_scores, top], axis=1)
        rows = tf.concat([best_rows, start + at], axis=1)
        top, at = tf.math.top_k(merged, k=tf.cast(tf.minimum(k, tf.shape(merged, out_type=tf.int64)[1]), tf.int32))
        return start + chunk, top, tf.gather(rows, at, batch_dims=1)

    start = tf.constant(0, tf.int64)
    batch = tf.shape(queries)[0]
    init = (start, tf.zeros([batch, 0], tf.float32), tf.zeros([batch, 0], tf.int64))
    _, scores, rows = tf.while_loop(
        lambda s, *_: s < m, body, init,
        shape_invariants=(start.shape, tf.TensorShape([None, None]), tf.TensorShape([None, None])))
    return scores, rows


def _top_k_in_blocks(scores: tf.Tensor, k: tf.Tensor, block: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``top_k(scores [B, C], min(k, C))`` as the top-k of per-block top-ks (same result, ties included)."""
    b, c = tf.shape(scores)[0], tf.shape(scores)[1]
    blocks = (c + block - 1) // block
    padded = tf.pad(scores, [[0, 0], [0, blocks * block - c]], constant_values=-float("inf"))
    per_block = tf.cast(tf.minimum(k, block), tf.int32)
    top, at = tf.math.top_k(tf.reshape(padded, [b * blocks, block]), k=per_block)
    at = tf.reshape(at + tf.tile(tf.range(blocks)[:, None] * block, [b, 1]), [b, -1])
    top = tf.reshape(top, [b, -1])
    best, where = tf.math.top_k(top, k=tf.cast(tf.minimum(k, tf.cast(c, tf.int64)), tf.int32))
    return best, tf.cast(tf.gather(at, where, batch_dims=1), tf.int64)
