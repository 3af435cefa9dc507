"""Records ↔ ``tf.train.Example``, and raw ids → vocabulary indices."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tfcascade import features as F

ID_FEATURES = F.USER_FEATURES + F.ITEM_FEATURES
FLOAT_FEATURES = ("label", "mask")


def vocabulary_feature(name: str) -> str:
    """The vocabulary a feature uses (history features share their item's)."""
    return F.HISTORY_TO_ITEM.get(name, name)


def index_record(record: Mapping, vocabularies: Mapping[str, Mapping[int, int]]) -> dict:
    """Maps raw ids to vocabulary indices (unknown → 0, raw padding −1 → 0)."""
    out = dict(record)
    missing = sorted({vocabulary_feature(n) for n in ID_FEATURES + F.HISTORY_FEATURES} - set(vocabularies))
    if missing:
        raise ValueError(f"vocabularies lacks features {missing}; got vocabularies for {sorted(vocabularies)}")
    for name in ID_FEATURES + F.HISTORY_FEATURES:
        vocab = vocabularies[vocabulary_feature(name)]
        raw = np.asarray(record[name], np.int64)
        flat = np.array([0 if v < 0 and name not in F.USER_FEATURES else vocab.get(int(v), 0)
                         for v in raw.reshape(-1)], np.int64)
        out[name] = flat.reshape(raw.shape) if raw.ndim else np.int64(flat[0])
    return out


def to_example(record: Mapping):
    """Serialises an (indexed) record as a ``tf.train.Example``."""
    import tensorflow as tf

    feats = {}
    for name in F.USER_FEATURES + F.HISTORY_FEATURES + F.ITEM_FEATURES + ("stage", "rank_index", "request_id"):
        values = np.atleast_1d(np.asarray(record[name], np.int64))
        feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values.tolist()))
    for name in FLOAT_FEATURES:
        values = np.atleast_1d(np.asarray(record[name], np.float32))
        feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feats))


def feature_spec(list_size: int, history_length: int = F.HISTORY_LENGTH) -> dict:
    """``tf.io.parse_example`` spec of one request."""
    import tensorflow as tf

    spec = {"request_id": tf.io.FixedLenFeature([], tf.int64)}
    spec.update({n: tf.io.FixedLenFeature([], tf.int64) for n in F.USER_FEATURES})
    spec.update({n: tf.io.FixedLenFeature([history_length], tf.int64) for n in F.HISTORY_FEATURES})
    spec.update({n: tf.io.FixedLenFeature([list_size], tf.int64)
                 for n in F.ITEM_FEATURES + ("stage", "rank_index")})
    spec.update({n: tf.io.FixedLenFeature([list_size], tf.float32) for n in FLOAT_FEATURES})
    return spec


def schema_dict(list_sizes: Mapping[str, int]) -> dict:
    """A JSON-able schema: feature -> {dtype, shape per split}."""
    out = {"request_id": {"dtype": "int64", "shape": []}}
    for n in F.USER_FEATURES:
        out[n] = {"dtype": "int64", "shape": []}
    for n in F.HISTORY_FEATURES:
        out[n] = {"dtype": "int64", "shape": [F.HISTORY_LENGTH]}
    for n in F.ITEM_FEATURES + ("stage", "rank_index", "label", "mask"):
        out[n] = {"dtype": "float32" if n in FLOAT_FEATURES else "int64",
                  "shape": {split: [size] for split, size in list_sizes.items()}}
    return out
