"""Reader for RecFlow-layout folders (the real dataset or the simulator's output).

Yields per-request records in the LCRON sample organisation (``organise.organise_request``):
user features and history, n_i items from each stage, graded labels, a mask, and for
evaluation days extra negatives sampled from other requests of the same day.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from tfcascade.data.organise import (
    RequestProblem,
    item_of,
    negative_pool_key,
    organise_request,
)
from tfcascade.data.schema import COLUMNS, SchemaError, normalise_row, row_problem, validate_frame

NEGATIVE_POOL_SIZE = 4000


def list_days(recflow_dir: str | Path) -> list[str]:
    """The days present in ``all_stage/`` (sorted)."""
    root = Path(recflow_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"recflow_dir={str(root)!r} does not exist or is not a folder")
    stage_dir = root / "all_stage"
    days = sorted(p.name[: -len(".feather")] for p in stage_dir.glob("*.feather"))
    if not days:
        raise FileNotFoundError(f"no all_stage/<day>.feather files under recflow_dir={str(root)!r}")
    return days


def read_day(recflow_dir: str | Path, day: str) -> pd.DataFrame:
    """One day's ``all_stage`` rows, checked against the schema."""
    path = Path(recflow_dir) / "all_stage" / f"{day}.feather"
    try:
        frame = pd.read_feather(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file {path}") from None
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise SchemaError(f"{path}: cannot be read as a feather file ({err})") from err
    validate_frame(frame, str(path))
    return frame[list(COLUMNS)]


def read_histories(recflow_dir: str | Path, day: str) -> dict:
    """``seq_effective_50_dict/<day>.pkl``: request_id -> {"video_id": [...], "author_id": [...]}."""
    path = Path(recflow_dir) / "seq_effective_50_dict" / f"{day}.pkl"
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception as err:
        raise SchemaError(f"{path}: cannot be read as a pickle ({err})") from err


def negative_pool(rows: Sequence[dict], size: int = NEGATIVE_POOL_SIZE) -> list[dict]:
    """The day's pool of evaluation negatives: the ``size`` logged items of smallest
    deterministic priority (``organise.negative_pool_key``), deduplicated by video id."""
    ranked = sorted(rows, key=negative_pool_key)
    seen, pool = set(), []
    for row in ranked:
        if row["video_id"] not in seen:
            seen.add(row["video_id"])
            pool.append(item_of(row))
        if len(pool) == size:
            break
    return pool


def read_requests(recflow_dir: str | Path, days: Sequence[str] | None = None, stages: int = 2,
                  eval_negatives: int = 0, seed: int = 0, skipped: list | None = None) -> Iterator[dict]:
    """Yields one record per usable request (raw ids), day by day in request order.

    Args:
      recflow_dir: the RecFlow-layout folder.
      days: which days (default all).
      stages: 2 or 3 (list layout and labels, ``tfcascade/features.py``).
      eval_negatives: sampled negatives to append per request (e.g. 160 on evaluation days).
      seed: seeds the list order and the negative sampling (deterministic per request; the
        Beam pipeline's output equals ``seed=0``).
      skipped: if given, receives ``(request_id or None, reason)`` for every malformed row and
        every unusable request, so nothing is dropped silently.
    """
    for day in days or list_days(recflow_dir):
        frame = read_day(recflow_dir, day)
        histories = read_histories(recflow_dir, day)
        rows = []
        for raw in frame.to_dict("records"):
            problem = row_problem(raw)
            if problem is None:
                rows.append(normalise_row(raw))
            elif skipped is not None:
                skipped.append((raw.get("request_id"), problem))
        pool = negative_pool(rows) if eval_negatives else []
        groups: dict[int, list] = {}
        for row in rows:
            groups.setdefault(row["request_id"], []).append(row)
        for request_id in sorted(groups):
            try:
                yield organise_request(groups[request_id], histories.get(request_id), stages,
                                       pool, eval_negatives, seed)
            except RequestProblem as err:
                if skipped is not None:
                    skipped.append((request_id, str(err)))
