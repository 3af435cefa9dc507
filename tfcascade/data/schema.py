"""The RecFlow file format (RecFlow, ICLR 2025, arXiv 2410.20868), as the reference readers use it.

``docs/recflow_format.md`` is the spec with its sources. In short:

    all_stage/<day>.feather          one row per logged (request, video): :data:`COLUMNS`
    realshow/<day>.feather           the all_stage rows with realshow == 1
    request_id_dict/<day>.pkl        request_id -> {stage label -> int64 [n, 8] (REQUEST_DICT_COLUMNS)}
    seq_effective_50_dict/<day>.pkl  request_id -> int64 [50, 10] (HISTORY_COLUMNS), oldest first,
                                     valid rows at the end, all-zero rows as padding
    others/id_cnt.pkl                id feature -> number of distinct ids (ids are 0 .. count - 1)

Timestamps: ``request_timestamp`` in milliseconds, ``upload_timestamp`` in seconds, ``duration``
and ``playing_time`` in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tfcascade.features import HISTORY_TO_ITEM

# column -> numpy kind: "i" integer ids / counts / flags, "f" any finite number.
REQUEST_COLUMNS = {
    "request_id": "i", "user_id": "i", "request_timestamp": "i", "device_id": "i", "age": "i",
    "gender": "i", "province": "i",
}
ITEM_COLUMNS = {
    "video_id": "i", "author_id": "i", "category_level_one": "i", "category_level_two": "i",
    "upload_type": "i", "upload_timestamp": "i", "duration": "i",
}
STAGE_FLAGS = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg",
               "prerank_neg")
POSITION_COLUMNS = {"rank_index": "i", "rerank_index": "i"}
FEEDBACK_COLUMNS = {
    "playing_time": "f", "effective_view": "i", "long_view": "i", "like": "i", "follow": "i",
    "forward": "i", "comment": "i",
}
COLUMNS: dict[str, str] = {
    **REQUEST_COLUMNS, **ITEM_COLUMNS, **dict.fromkeys(STAGE_FLAGS, "i"), **POSITION_COLUMNS,
    **FEEDBACK_COLUMNS,
}
# Ids are non-negative (−1 is the padding of raw id lists downstream).
ID_COLUMNS = ("request_id", "user_id", "device_id", "age", "gender", "province", "video_id",
              "author_id", "category_level_one", "category_level_two", "upload_type")

# The columns of one item in request_id_dict and of one behaviour in seq_effective_50_dict.
REQUEST_DICT_COLUMNS = ("video_id", "author_id", "duration", "category_level_two", "upload_type",
                        "upload_timestamp", "category_level_one", "effective_view")
HISTORY_COLUMNS = ("video_id", "author_id", "category_level_two", "category_level_one", "upload_type",
                   "upload_timestamp", "duration", "request_timestamp", "playing_time", "request_id")
HISTORY_LENGTH = 50
# id_cnt.pkl keys: every id feature the reference readers embed (``photo_id`` is the name
# RecFlow's coarse-ranking code reads for ``video_id``).
ID_COUNT_KEYS = ("user_id", "device_id", "age", "gender", "province", "video_id", "photo_id",
                 "author_id", "category_level_one", "category_level_two", "upload_type")

# Flags whose graded label needs a stage position (``features.graded_label``).
POSITIONED_FLAGS = (("rank_pos", "rank_index"), ("rerank_neg", "rank_index"), ("rerank_pos", "rank_index"),
                    ("rerank_pos", "rerank_index"))
# The most advanced stage first: of two rows for one (request, video), the more advanced is kept.
FLAG_ORDER = ("rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
_INT64_LIMIT = 2.0**63


class SchemaError(ValueError):
    """A RecFlow file does not match the format."""


def validate_frame(frame: pd.DataFrame, source: str) -> None:
    """Checks that a file has every column; raises :class:`SchemaError` naming the file.

    Values are checked row by row (:func:`row_problem`): a bad value dead-letters its row,
    not the file.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"{source}: missing columns {missing} (RecFlow all_stage format)")


def value_problem(name: str, value: object, kind: str = "i") -> str | None:
    """Why one field cannot be used (None if it can): not a number, not finite, not an
    integer (kind ``"i"``) or outside int64. One rule for every column."""
    if value is None:
        return f"missing field {name!r}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return f"field {name!r}={value!r} has type {type(value).__name__}, expected a number"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return f"field {name!r}={value!r} is not finite"
        if kind == "i" and (abs(value) >= _INT64_LIMIT or not float(value).is_integer()):
            return f"field {name!r}={value!r} is not an int64 integer"
    return None


def row_problem(row: Mapping[str, object]) -> str | None:
    """Why one all_stage row cannot be used (None if it can): a missing, non-numeric,
    non-finite or non-int64 field, a negative id, a flag other than 0/1, no stage flag, or a
    ranked flag without its position."""
    for column, kind in COLUMNS.items():
        problem = value_problem(column, row.get(column), kind)
        if problem:
            return problem
    for column in ID_COLUMNS:
        if row[column] < 0:
            return f"field {column!r}={row[column]!r} is a negative id"
    for flag in STAGE_FLAGS:
        if int(row[flag]) not in (0, 1):
            return f"unknown stage flag value {flag}={row[flag]!r} (expected 0 or 1)"
    if stage_of(row) is None:
        return "row has no stage flag set"
    for flag, position in POSITIONED_FLAGS:
        if int(row[flag]) == 1 and row[position] < 0:
            return f"a {flag} row needs its {position} (the graded label), got {position}={row[position]!r}"
    return None


def stage_of(row: Mapping[str, object]) -> str | None:
    """The most advanced stage sample a row belongs to, or None."""
    for flag in FLAG_ORDER:
        if int(row[flag]) == 1:
            return flag
    return None


def stage_rank(row: Mapping[str, object]) -> int:
    """How advanced a row's stage is: 0 for the most advanced (``rerank_pos``)."""
    return FLAG_ORDER.index(stage_of(row))


def normalise_row(row: Mapping[str, object]) -> dict:
    """A validated row with plain Python ints / floats (feather gives numpy scalars)."""
    return {c: (float(row[c]) if k == "f" else int(row[c])) for c, k in COLUMNS.items()}


def history_problem(history: object) -> str | None:
    """Why a ``seq_effective_50_dict`` value cannot be used (None if it can)."""
    try:
        array = np.asarray(history)
    except Exception as err:  # ragged nested lists and odd objects
        return f"history is not an array ({err})"
    shape = (HISTORY_LENGTH, len(HISTORY_COLUMNS))
    if array.shape != shape:
        return f"history has shape {array.shape}, expected {shape}"
    if array.dtype.kind not in "iuf":
        return f"history has dtype {array.dtype}, expected int64"
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (np.abs(array) >= _INT64_LIMIT) | (array != np.round(array))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            return f"history row {r} column {HISTORY_COLUMNS[c]!r}={float(array[r, c])!r} is not an int64 integer"
    return None


def history_items(history: np.ndarray) -> dict[str, list[int]]:
    """A checked history → ``{item feature: [...]}`` newest first, for the item features the
    history features name (``features.HISTORY_TO_ITEM``: video, author, both categories and
    upload type); valid rows only (``request_timestamp > 0``, as the reference readers mark them)."""
    array = np.asarray(history).astype(np.int64)
    valid = array[array[:, HISTORY_COLUMNS.index("request_timestamp")] > 0][::-1]
    return {name: valid[:, HISTORY_COLUMNS.index(name)].tolist() for name in HISTORY_TO_ITEM.values()}


def request_entry_problem(entry: object) -> str | None:
    """Why a ``request_id_dict`` value cannot be used (None if it can)."""
    if not isinstance(entry, Mapping):
        return f"request_id_dict entry is a {type(entry).__name__}, expected a dict of stage -> array"
    for stage, items in entry.items():
        if stage not in STAGE_FLAGS:
            return f"request_id_dict entry has unknown stage label {stage!r}"
        width = len(REQUEST_DICT_COLUMNS)
        if not (isinstance(items, np.ndarray) and items.ndim == 2 and items.shape[1] == width
                and items.dtype.kind in "iu"):
            shape = getattr(items, "shape", type(items).__name__)
            return f"request_id_dict[{stage!r}] is {shape}, expected an int64 array [n, {width}]"
    return None


def entry_videos(entry: Mapping[str, np.ndarray]) -> set[tuple[str, int]]:
    """The (stage, video_id) pairs a checked request_id_dict entry lists."""
    return {(stage, int(v)) for stage, items in entry.items() for v in items[:, 0].tolist()}


def row_videos(row: Mapping[str, object]) -> set[tuple[str, int]]:
    """The (stage, video_id) pairs an all_stage row stands for (one per flag set)."""
    return {(flag, int(row["video_id"])) for flag in STAGE_FLAGS if int(row[flag]) == 1}
