"""The one schema of RecFlow's stage-sample logs (RecFlow, ICLR 2025, arXiv 2410.20868).

``all_stage/<day>.feather`` holds one row per logged (request, item) with the request's user
features, the item's features, one 0/1 flag per stage sample and the ranking positions;
``realshow/<day>.feather`` the shown rows with their feedback. Both the simulator's output and
the real dataset are checked against :data:`COLUMNS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

# column -> numpy kind: "i" integer ids / counts / flags, "f" float.
REQUEST_COLUMNS = {
    "request_id": "i", "user_id": "i", "request_timestamp": "i", "device_id": "i", "age": "i",
    "gender": "i", "province": "i",
}
ITEM_COLUMNS = {
    "video_id": "i", "author_id": "i", "category_level_one": "i", "category_level_two": "i",
    "upload_type": "i", "upload_timestamp": "i",
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
ID_COLUMNS = ("request_id", "user_id", "device_id", "age", "gender", "province", "video_id",
              "author_id", "category_level_one", "category_level_two", "upload_type")

# The stage sample a row belongs to, from its flags: the most advanced stage wins
# (a rerank_pos item is also rank_pos and realshow).
_FLAG_ORDER = ("rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg", "prerank_neg")


class SchemaError(ValueError):
    """A RecFlow file does not match the schema."""


def validate_frame(frame: pd.DataFrame, source: str) -> None:
    """Checks a whole file's columns and dtypes; raises :class:`SchemaError` naming the file."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"{source}: missing columns {missing} (RecFlow all_stage schema)")
    for column, kind in COLUMNS.items():
        dtype = frame[column].dtype
        ok = np.issubdtype(dtype, np.integer) if kind == "i" else np.issubdtype(dtype, np.number)
        if not ok and not (kind == "i" and np.issubdtype(dtype, np.floating)):
            raise SchemaError(f"{source}: column {column!r} has dtype {dtype}, expected "
                              f"{'integer' if kind == 'i' else 'numeric'}")


def row_problem(row: Mapping[str, object]) -> str | None:
    """Why one log row cannot be used (None if it can): missing/ill-typed fields, NaN ids,
    flags other than 0/1, or no stage flag at all."""
    for column, kind in COLUMNS.items():
        if column not in row or row[column] is None:
            return f"missing field {column!r}"
        value = row[column]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"field {column!r} has type {type(value).__name__}, expected a number"
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            return f"field {column!r} is NaN"
        if kind == "i" and float(value) != int(value):
            return f"field {column!r}={value!r} is not an integer"
    for flag in STAGE_FLAGS:
        if int(row[flag]) not in (0, 1):
            return f"unknown stage flag value {flag}={row[flag]!r} (expected 0 or 1)"
    if stage_of(row) is None:
        return "row has no stage flag set"
    return None


def stage_of(row: Mapping[str, object]) -> str | None:
    """The most advanced stage sample a row belongs to, or None."""
    for flag in _FLAG_ORDER:
        if int(row[flag]) == 1:
            return flag
    return None


def normalise_row(row: Mapping[str, object]) -> dict:
    """A validated row with plain Python ints / floats (feather gives numpy scalars)."""
    return {c: (float(row[c]) if k == "f" else int(row[c])) for c, k in COLUMNS.items()}
