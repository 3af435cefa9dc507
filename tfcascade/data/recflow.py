"""Reader of RecFlow folders (the real release or ``tfcascade simulate`` output).

Reads the real format (``docs/recflow_format.md``): item features and stage flags from
``all_stage/<day>.feather``, checked against ``request_id_dict/<day>.pkl``, the behaviour history
from ``seq_effective_50_dict/<day>.pkl``. Yields per-request records in the LCRON sample
organisation (``organise.organise_request``): user features and history, n_i items from each
stage, graded labels, a mask, and for evaluation days extra negatives sampled from other requests
of the same day. Rows that cannot be used go to ``skipped`` with their reason
(``assemble.assemble_request``), the same rows and reasons as the Beam preprocessing.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from tfcascade.data.assemble import assemble_requests, check_rows
from tfcascade.data.organise import item_of, negative_pool_key
from tfcascade.data.schema import SchemaError, value_problem
from tfcascade.data.shards import read_all_stage

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


def parse_pickle(data: bytes, source: str) -> dict:
    """A request_id_dict or seq_effective_50_dict file: a dict keyed by integer request id."""
    try:
        table = pickle.loads(data)
    except Exception as err:
        raise SchemaError(f"{source}: cannot be read as a pickle ({err})") from err
    if not isinstance(table, dict):
        raise SchemaError(f"{source}: holds a {type(table).__name__}, expected a dict keyed by request_id")
    out = {}
    for key, value in table.items():
        try:
            out[int(key)] = value
        except (TypeError, ValueError, OverflowError):
            raise SchemaError(f"{source}: key {key!r} is not an integer request_id") from None
    return out


def day_file(recflow_dir: str | Path, sub: str, day: str) -> Path:
    """``<recflow_dir>/<sub>/<day>.<ext>`` of a day, required to exist."""
    path = Path(recflow_dir) / sub / f"{day}.{'feather' if sub == 'all_stage' else 'pkl'}"
    if not path.exists():
        raise FileNotFoundError(f"missing file {path} (every all_stage day needs its {sub} file)")
    return path


def read_day(recflow_dir: str | Path, day: str) -> pd.DataFrame:
    """One day's ``all_stage`` rows, columns checked."""
    path = day_file(recflow_dir, "all_stage", day)
    return read_all_stage(str(path), str(path))


def read_table(recflow_dir: str | Path, sub: str, day: str) -> dict:
    """One day's ``request_id_dict`` or ``seq_effective_50_dict`` table."""
    path = day_file(recflow_dir, sub, day)
    return parse_pickle(path.read_bytes(), str(path))


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
                  eval_negatives: int = 0, seed: int = 0, skipped: list | None = None,
                  counts: dict | None = None) -> Iterator[dict]:
    """Yields one record per usable request (raw ids), day by day in request order.

    Args:
      recflow_dir: the RecFlow folder.
      days: which days (default all).
      stages: 2 or 3 (list layout and labels, ``tfcascade/features.py``).
      eval_negatives: sampled negatives to append per request (e.g. 160 on evaluation days).
      seed: seeds the list order and the negative sampling (deterministic per request; the
        Beam pipeline's output equals ``seed=0``).
      skipped: if given, receives ``(request_id or None, reason)`` for every dead-letter row
        (``assemble.assemble_request``), so nothing is dropped silently.
      counts: if given, receives ``input_rows``, ``used_rows`` and ``dead_letter_rows`` as the
        Beam preprocessing counts them (input = used + dead-letter).
    """
    tally = counts if counts is not None else {}
    for key in ("input_rows", "used_rows", "dead_letter_rows"):
        tally.setdefault(key, 0)
    for day in days or list_days(recflow_dir):
        rows, bad = check_rows(read_day(recflow_dir, day))
        entries = read_table(recflow_dir, "request_id_dict", day)
        histories = read_table(recflow_dir, "seq_effective_50_dict", day)
        tally["input_rows"] += len(rows) + len(bad)
        tally["dead_letter_rows"] += len(bad)
        if skipped is not None:
            skipped += [(_request_of(raw), problem) for raw, problem in bad]
        pool = negative_pool(rows) if eval_negatives else []
        for request_id, result in assemble_requests(rows, entries, histories, stages, pool, eval_negatives, seed):
            tally["input_rows"] += result.dict_only
            tally["used_rows"] += len(result.used)
            tally["dead_letter_rows"] += len(result.dead)
            if skipped is not None:
                skipped += [(request_id, reason) for _, reason in result.dead]
            if result.record is not None:
                yield result.record


def _request_of(raw: dict) -> int | None:
    """A bad row's request id, where it has a usable one (for the dead letter)."""
    value = raw.get("request_id")
    return None if value_problem("request_id", value) else int(value)
