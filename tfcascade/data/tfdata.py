"""``tf.data`` input functions over the preprocessed TFRecords."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfcascade.data.examples import feature_spec, index_record, to_example
from tfcascade.data.negatives import DRAWS, append_sampled_negatives

# Records are shuffled through a buffer of this many batches, not across a whole shard.
SHUFFLE_BATCHES = 8


def load_metadata(out_dir: str) -> dict:
    """``OUT/metadata.json`` written by the preprocessing pipeline."""
    path = os.path.join(os.fspath(out_dir), "metadata.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no metadata.json in out_dir={os.fspath(out_dir)!r}: run `tfcascade preprocess` first")
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def load_vocabularies(out_dir: str) -> dict[str, list[int]]:
    """``OUT/vocab/<feature>.txt`` → feature → raw ids (line i ↔ index i + 1)."""
    vocab_dir = os.path.join(os.fspath(out_dir), "vocab")
    files = tf.io.gfile.glob(os.path.join(vocab_dir, "*.txt"))
    if not files:
        raise FileNotFoundError(f"no vocabulary files in {vocab_dir!r}")
    out = {}
    for path in files:
        with tf.io.gfile.GFile(path) as fh:
            out[os.path.basename(path)[:-4]] = [int(line) for line in fh.read().split()]
    return out


def _files(source: str | Sequence[str], split: str) -> list[str]:
    if isinstance(source, (list, tuple)):
        files = [os.fspath(f) for f in source]
    else:
        source = os.fspath(source)
        pattern = source
        if tf.io.gfile.isdir(source):
            sub = os.path.join(source, split)
            pattern = os.path.join(sub if tf.io.gfile.isdir(sub) else source, "*.tfrecord*")
        files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files for split={split!r} in {source!r}")
    return files


class EmptySplitError(ValueError):
    """A split has no example."""


def _first_record(files: Sequence[str]) -> bytes | None:
    for path in files:
        for record in tf.data.TFRecordDataset(path, compression_type=_compression(path)).take(1):
            return record.numpy()
    return None


def dataset_has_examples(source: str | Sequence[str], split: str) -> bool:
    """Whether ``split`` of ``source`` (as for :func:`make_dataset`) holds at least one example."""
    return _first_record(_files(source, split)) is not None


def _list_sizes(files: Sequence[str], split: str) -> tuple[int, int]:
    """(list size, history length) read off the first example."""
    record = _first_record(files)
    if record is None:
        raise EmptySplitError(f"split={split!r} has no example in {len(files)} TFRecord files "
                              f"(first {files[0]!r}): its days had no usable request")
    example = tf.train.Example.FromString(record)
    feats = example.features.feature
    return len(feats["mask"].float_list.value), len(feats["hist_video_id"].int64_list.value)


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def make_dataset(source: str | Sequence[str], split: str = "train", batch_size: int = 1024,
                 shuffle: bool = True, num_epochs: int | None = 1, seed: int | None = None,
                 drop_remainder: bool = False, sampled_negatives: int = 0,
                 negative_draw: str = "items") -> tf.data.Dataset:
    """Batched feature dicts (``tfcascade/features.py``) from preprocessed TFRecords.

    Args:
      source: the preprocessing output folder (``OUT`` → ``OUT/<split>/*``), a glob pattern,
        or a list of files.
      split: ``train`` or ``eval`` when ``source`` is a folder.
      batch_size: requests per batch.
      shuffle: shuffle the files, then the records through a buffer of ``SHUFFLE_BATCHES``
        batches (seeded by ``seed``): records are not mixed across a whole shard.
      num_epochs: passes over the data (None = forever).
      sampled_negatives: m > 0 appends m in-batch negatives to every list
        (``negatives.append_sampled_negatives``, seeded by ``seed`` and the batch number).
      negative_draw: how they are drawn, ``items`` (distinct items) or ``slots`` (other
        requests' slots, as the DFTopK reference code).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got batch_size={batch_size}")
    if sampled_negatives < 0:
        raise ValueError(f"sampled_negatives must be >= 0, got sampled_negatives={sampled_negatives}")
    if negative_draw not in DRAWS:
        raise ValueError(f"negative_draw must be one of {DRAWS}, got negative_draw={negative_draw!r}")
    files = _files(source, split)
    list_size, history_length = _list_sizes(files, split)
    spec = feature_spec(list_size, history_length)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=_compression(files[0])),
                       cycle_length=min(4, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=not shuffle or seed is not None)
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BATCHES * batch_size, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda b: tf.io.parse_example(b, spec), num_parallel_calls=tf.data.AUTOTUNE)
    if sampled_negatives:
        base = int(np.random.default_rng(seed).integers(2**31)) if seed is None else int(seed)
        ds = ds.enumerate().map(
            lambda i, b: append_sampled_negatives(b, sampled_negatives, tf.stack([tf.constant(base, tf.int64), i]),
                                                  negative_draw),
            num_parallel_calls=tf.data.AUTOTUNE)
    # Under a multi-worker strategy every worker reads the same (seeded) batches and keeps its
    # share of each global batch: any number of files works, and the global batches are those
    # of a single worker.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def dataset_from_records(records: Iterable[Mapping], vocabularies: Mapping[str, Sequence[int]] | None = None,
                         batch_size: int = 256) -> tf.data.Dataset:
    """The same batches as :func:`make_dataset`, straight from reader records (no Beam).

    ``vocabularies`` maps feature → raw ids (index = position + 1); when None, vocabularies
    are built from the records themselves.
    """
    from tfcascade.data.vocabulary import build_vocabularies

    records = list(records)
    vocab = vocabularies or build_vocabularies(records)
    lookup = {f: {raw: i + 1 for i, raw in enumerate(ids)} for f, ids in vocab.items()}
    serialized = [to_example(index_record(r, lookup)).SerializeToString() for r in records]
    n = len(records[0]["mask"])
    spec = feature_spec(n, len(records[0]["hist_video_id"]))
    ds = tf.data.Dataset.from_tensor_slices(np.array(serialized, dtype=object)).batch(batch_size)
    return ds.map(lambda b: tf.io.parse_example(b, spec))
