"""The item corpus a served cascade recommends from: one row per item, its raw id and features.

The ``recommend`` signature scores every row of this table with the retrieval tower, so the
table is part of the exported model (a new corpus is a new model version). Two sources:

- ``items_from_examples``: the items of the training examples (the default at export);
- ``items_from_csv``: a CSV file with a header naming ``features.ITEM_FEATURES``, one row per
  item, raw ids (e.g. the catalogue of items that may be recommended today).

Both return an :class:`ItemTable` holding vocabulary indices (what the model reads; raw ids
outside the vocabulary map to index 0, "unknown", like every served input) and the raw video
ids (what ``recommend`` returns).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tfcascade import features as F


@dataclasses.dataclass(frozen=True)
class ItemTable:
    """``indices``: feature → ``[M]`` int64 vocabulary indices; ``video_ids``: ``[M]`` raw ids."""

    indices: dict[str, np.ndarray]
    video_ids: np.ndarray

    def __post_init__(self):
        if len(self.video_ids) == 0:
            raise ValueError("item table is empty: recommend needs at least one item")
        sizes = {name: len(self.indices[name]) for name in F.ITEM_FEATURES}
        if len(set(sizes.values()) | {len(self.video_ids)}) != 1:
            raise ValueError(f"item table columns differ in length: {sizes}, video_ids {len(self.video_ids)}")
        values, counts = np.unique(self.video_ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"item table holds video_id {int(values[counts > 1][0])} more than once")

    def __len__(self) -> int:
        return len(self.video_ids)


def items_from_raw(raw: Mapping[str, Sequence[int]], vocabularies: Mapping[str, Sequence[int]]) -> ItemTable:
    """An item table from raw-id columns (``features.ITEM_FEATURES``, one value per item).

    Raises:
      ValueError: a column is missing, an id is negative, or a video_id appears twice.
    """
    missing = [name for name in F.ITEM_FEATURES if name not in raw]
    if missing:
        raise ValueError(f"item table lacks the columns {missing}")
    indices = {}
    for name in F.ITEM_FEATURES:
        column = np.asarray(raw[name], np.int64)
        if column.size and column.min() < 0:
            raise ValueError(f"item table column {name} holds a negative id ({int(column.min())})")
        lookup = {int(v): i + 1 for i, v in enumerate(vocabularies[name])}
        indices[name] = np.array([lookup.get(int(v), 0) for v in column], np.int64)
    return ItemTable(indices, np.asarray(raw["video_id"], np.int64))


def items_from_csv(path: str, vocabularies: Mapping[str, Sequence[int]]) -> ItemTable:
    """The item table of a CSV file with a header row naming ``features.ITEM_FEATURES``; an
    ``upload_timestamp`` column (seconds, as RecFlow's) may stand for the three upload time
    features (``features.time_parts``).

    Raises:
      ValueError: naming the file and line of a missing column or a non-integer id.
    """
    import tensorflow as tf

    columns = {name: [] for name in F.ITEM_FEATURES}
    with tf.io.gfile.GFile(path) as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        derived = "upload_timestamp" in header
        read = [name for name in F.ITEM_FEATURES if not (derived and name in F.TIME_FEATURES)]
        read += ["upload_timestamp"] if derived else []
        missing = [name for name in read if name not in header]
        if missing:
            raise ValueError(f"items file {path}: the header lacks {missing} (has {header}; upload_timestamp "
                             "may stand for the upload time features)")
        for line, row in enumerate(reader, start=2):
            values = {}
            for name in read:
                try:
                    values[name] = int(row[name])
                except (TypeError, ValueError):
                    raise ValueError(f"items file {path} line {line}: {name}={row[name]!r} is not an integer id") from None
            if derived:
                values.update(F.time_features(values, "upload"))
            for name in F.ITEM_FEATURES:
                columns[name].append(values[name])
    try:
        return items_from_raw(columns, vocabularies)
    except ValueError as err:
        raise ValueError(f"items file {path}: {err}") from None


def items_from_examples(source, vocabularies: Mapping[str, Sequence[int]], split: str = "train",
                        batch_size: int = 1024) -> ItemTable:
    """Every known item of the examples in ``source`` (a preprocessing output or files), in id order.

    Items whose video_id is unknown (index 0) are left out; an item's features are those of its
    first occurrence.
    """
    from tfcascade.data import make_dataset

    parts = {name: [] for name in F.ITEM_FEATURES}
    for batch in make_dataset(source, split, batch_size=batch_size, shuffle=False):
        real = batch["mask"].numpy().reshape(-1) > 0
        for name in F.ITEM_FEATURES:
            parts[name].append(batch[name].numpy().reshape(-1)[real])
    columns = {name: np.concatenate(v) if v else np.zeros([0], np.int64) for name, v in parts.items()}
    video, first = np.unique(columns["video_id"], return_index=True)
    keep = first[video > 0]
    indices = {name: columns[name][keep].astype(np.int64) for name in F.ITEM_FEATURES}
    raw_video = np.asarray(vocabularies["video_id"], np.int64)[indices["video_id"] - 1]
    return ItemTable(indices, raw_video)
