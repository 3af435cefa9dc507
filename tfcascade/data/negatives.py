"""In-batch sampled negatives for training and evaluation lists.

The evaluation lists hold each request's logged items plus negatives sampled uniformly from
a pool of the day's distinct logged items, never one of the request's own (DFTopK, arXiv 2510.11472;
``tfcascade.beam.preprocess``). A model trained on the logged items alone never sees such items;
the DFTopK paper (arXiv 2510.11472) trains with sampled negatives of several sizes. This
appends ``m`` items to every list of a batch, drawn from the batch in one of two ways:

- ``draw="items"`` (default): uniformly over the *distinct* valid items of the batch (so popular
  items are not favoured), with replacement; a draw that is one of the request's own items
  becomes padding. The same distribution as the preprocessed evaluation lists.
- ``draw="slots"``: as the DFTopK reference code draws them — uniformly over the valid list
  slots of the *other* requests of the batch, without replacement per request (a popular item
  is drawn as often as it was logged; an item the request also logged can be drawn from another
  request's slot and is kept). Fewer such slots than m leave the rest as padding.

Appended items follow the evaluation's conventions: label 0 (below every logged stage), stage
``sampled_neg``, rank_index −1, mask 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from tfcascade.features import ITEM_FEATURES, STAGE_CODES

ID_FEATURE = "video_id"
DRAWS = ("items", "slots")


def append_sampled_negatives(features: Mapping[str, tf.Tensor], m: int, seed: tf.Tensor,
                             draw: str = "items") -> dict[str, tf.Tensor]:
    """Appends ``m`` in-batch negatives to every list of a batch.

    Args:
      features: a batch of feature dicts (``[B, n]`` list features, ``[B]`` user features).
      m: negatives per request (> 0).
      seed: int32/int64 ``[2]`` stateless seed (vary it per batch).
      draw: ``items`` or ``slots`` (see the module docstring).

    Returns:
      The same dict with list features ``[B, n + m]``. A draw that cannot be made (``items``:
      one of the request's own items, or a batch without other items; ``slots``: fewer other
      slots than m) is padding: mask 0, label −1, stage −1.
    """
    if int(m) <= 0:
        raise ValueError(f"m must be > 0, got m={m!r}")
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {DRAWS}, got draw={draw!r}")
    ids = features[ID_FEATURE]
    valid = tf.cast(features["mask"], tf.float32) > 0  # [B, n]
    b, n = tf.shape(ids)[0], tf.shape(ids)[1]
    idx, keep = (_draw_items if draw == "items" else _draw_slots)(ids, valid, b, n, int(m), seed)
    out = dict(features)
    for name in ITEM_FEATURES:
        out[name] = tf.concat([features[name], tf.gather_nd(features[name], idx)], axis=1)
    extras = {"label": (0, -1), "stage": (STAGE_CODES["sampled_neg"], -1), "rank_index": (-1, -1), "mask": (1, 0)}
    for name, (value, padding) in extras.items():
        dtype = features[name].dtype
        fill = tf.where(keep, tf.constant(value, dtype), tf.constant(padding, dtype))
        out[name] = tf.concat([features[name], fill], axis=1)
    return out


def _draw_items(ids, valid, b, n, m, seed):
    """``[B, m, 2]`` (row, slot) of uniform draws over the batch's distinct items, and ``keep``."""
    # One flat position per distinct valid item id of the batch.
    positions = tf.boolean_mask(tf.reshape(tf.range(b * n), [-1]), tf.reshape(valid, [-1]))
    unique_ids, which = tf.unique(tf.boolean_mask(tf.reshape(ids, [-1]), tf.reshape(valid, [-1])))
    count = tf.size(unique_ids)
    first = tf.math.unsorted_segment_min(positions, which, count)  # [U]
    first = tf.concat([first, [0]], 0)  # a placeholder for a batch without valid items (never kept)
    draws = tf.random.stateless_uniform([b, m], tf.cast(seed, tf.int64), minval=0, maxval=tf.maximum(count, 1),
                                        dtype=tf.int32)
    flat = tf.gather(first, draws)
    idx = tf.stack([flat // n, flat % n], axis=-1)  # [B, m, 2] into the batch's lists
    drawn_ids = tf.gather_nd(ids, idx)
    own = tf.reduce_any(tf.logical_and(drawn_ids[:, :, None] == ids[:, None, :], valid[:, None, :]), axis=-1)
    return idx, tf.logical_and(count > 0, tf.logical_not(own))  # keep: [B, m]


def _draw_slots(ids, valid, b, n, m, seed):
    """``[B, m, 2]`` (row, slot) of draws without replacement over the other rows' valid slots
    (random keys, top m), and ``keep``."""
    flat_valid = tf.reshape(valid, [-1])  # [B·n]
    row_of = tf.range(b * n) // n
    allowed = tf.logical_and(flat_valid[None, :], row_of[None, :] != tf.range(b)[:, None])  # [B, B·n]
    keys = tf.random.stateless_uniform([b, b * n], tf.cast(seed, tf.int64))
    keys = tf.concat([tf.where(allowed, keys, -1.0), tf.fill([b, m], -2.0)], axis=1)  # ≥ m columns
    top_keys, flat = tf.math.top_k(keys, k=m)
    keep = top_keys >= 0.0
    flat = tf.where(keep, flat, 0)
    return tf.stack([flat // n, flat % n], axis=-1), keep
