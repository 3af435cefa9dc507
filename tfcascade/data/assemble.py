"""One request from its three RecFlow sources: all_stage rows, request_id_dict entry, history.

Shared by the in-memory reader (``recflow.read_requests``) and the Beam pipeline
(``tfcascade.beam.preprocess``), so both keep and dead-letter exactly the same rows. Every row that
comes in leaves as used or as a dead letter with its reason; an item that only
``request_id_dict`` lists is one more input row, dead-lettered:

    input rows = all_stage rows + request_id_dict-only items = used rows + dead-letter rows
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import pandas as pd

from tfcascade.data.organise import RequestProblem, organise_request
from tfcascade.data.schema import (
    entry_videos,
    history_items,
    history_problem,
    normalise_row,
    request_entry_problem,
    row_problem,
    row_videos,
    stage_of,
    stage_rank,
)


@dataclasses.dataclass
class Assembled:
    """The outcome for one request.

    Attributes:
      record: the training list (``organise.organise_request``), or None.
      used: the all_stage rows the record was built from.
      dead: ``(row, reason)`` for every other row; a request_id_dict-only item is a row
        ``{"request_id", "video_id", "stages"}``.
      dict_only: how many of ``dead`` came from request_id_dict alone (extra input rows).
    """

    record: dict | None = None
    used: list = dataclasses.field(default_factory=list)
    dead: list = dataclasses.field(default_factory=list)
    dict_only: int = 0


def assemble_request(request_id: int, rows: Sequence[Mapping], entry: object, history: object,
                     stages: int = 2, negatives: Sequence[Mapping] = (), num_negatives: int = 0,
                     seed: int = 0, has_entry: bool = True, has_history: bool = True) -> Assembled:
    """Joins and checks one request's sources, then organises its list.

    Args:
      request_id: the request.
      rows: its all_stage rows that passed ``schema.row_problem`` (normalised), file order.
      entry: its ``request_id_dict`` value (ignored when ``has_entry`` is False).
      history: its ``seq_effective_50_dict`` value (ignored when ``has_history`` is False).
      stages, negatives, num_negatives, seed: as for ``organise.organise_request``.
      has_entry, has_history: whether the request is in those files at all.

    Returns:
      An :class:`Assembled`. Rules, in order: of rows with the same video id the most
      advanced stage is kept (the first on a tie) and the rest are duplicates; a request
      missing from request_id_dict or seq_effective_50_dict, or with a malformed entry or
      history, dead-letters all its rows; a row whose flags differ from the stages
      request_id_dict lists its video under is dead; an item request_id_dict lists with no
      all_stage row is dead (a dict-only row); a request that cannot fill its list
      (``organise.RequestProblem``) dead-letters its remaining rows.
    """
    out = Assembled()
    entry_problem = request_entry_problem(entry) if has_entry else None
    listed = entry_videos(entry) if has_entry and entry_problem is None else set()
    row_video_ids = {int(r["video_id"]) for r in rows}
    for video in sorted({v for _, v in listed} - row_video_ids):
        labels = sorted(stage for stage, v in listed if v == video)
        out.dead.append(({"request_id": request_id, "video_id": video, "stages": labels},
                         f"video {video} is in request_id_dict{labels} of request {request_id} "
                         "but has no usable all_stage row"))
        out.dict_only += 1
    if not rows:
        if has_entry and entry_problem is not None:
            out.dead.append(({"request_id": request_id}, f"request {request_id}: {entry_problem}, "
                                                          "and it has no usable all_stage row"))
            out.dict_only += 1
        return out
    kept = _deduplicate(rows, out.dead)
    if not has_entry:
        reason = f"request {request_id} is in all_stage but not in request_id_dict"
    elif entry_problem is not None:
        reason = f"request {request_id}: {entry_problem}"
    elif not has_history:
        reason = f"request {request_id} is not in seq_effective_50_dict"
    else:
        reason = history_problem(history)
        reason = reason and f"request {request_id}: {reason}"
    if reason:
        out.dead += [(row, reason) for row in kept]
        return out
    consistent = []
    for row in kept:
        video = int(row["video_id"])
        mine = row_videos(row)
        theirs = {(stage, v) for stage, v in listed if v == video}
        if mine == theirs:
            consistent.append(row)
        else:
            out.dead.append((row, f"video {video} of request {request_id}: all_stage flags "
                                  f"{sorted(s for s, _ in mine)} but request_id_dict lists "
                                  f"{sorted(s for s, _ in theirs)}"))
    if not consistent:
        return out
    try:
        out.record = organise_request(consistent, history_items(history), stages, negatives,
                                      num_negatives, seed)
        out.used = consistent
    except RequestProblem as err:
        out.dead += [(row, str(err)) for row in consistent]
    return out


def check_rows(frame: pd.DataFrame) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Splits all_stage rows into usable ones (normalised, file order) and ``(raw row, reason)``
    for the others (``schema.row_problem``)."""
    rows, bad = [], []
    for raw in frame.to_dict("records"):
        problem = row_problem(raw)
        if problem is None:
            rows.append(normalise_row(raw))
        else:
            bad.append((raw, problem))
    return rows, bad


def assemble_requests(rows: Sequence[Mapping], entries: Mapping[int, object], histories: Mapping[int, object],
                      stages: int = 2, negatives: Sequence[Mapping] = (), num_negatives: int = 0,
                      seed: int = 0) -> Iterator[tuple[int, Assembled]]:
    """``(request_id, Assembled)`` of every request of a day (or of one request shard of it),
    in request-id order.

    Args:
      rows: the usable all_stage rows (``check_rows``).
      entries, histories: the request_id_dict and seq_effective_50_dict tables of the same
        requests, keyed by request id.
      stages, negatives, num_negatives, seed: as for ``assemble_request``.

    Every request of ``rows`` or ``entries`` is assembled (a history alone holds no row).
    """
    groups: dict[int, list] = {rid: [] for rid in entries}
    for row in rows:
        groups.setdefault(row["request_id"], []).append(row)
    for request_id in sorted(groups):
        yield request_id, assemble_request(
            request_id, groups[request_id], entries.get(request_id), histories.get(request_id), stages,
            negatives, num_negatives, seed, has_entry=request_id in entries, has_history=request_id in histories)


def _deduplicate(rows: Sequence[Mapping], dead: list) -> list:
    """One row per video id: the most advanced stage, on a tie the least row by its values
    (column order), so the choice does not depend on the order the runner delivers rows in;
    the rest to ``dead``."""
    def preference(row: Mapping) -> tuple:
        return (stage_rank(row), tuple(sorted(row.items())))  # normalised rows: numbers only

    best: dict[int, Mapping] = {}
    for row in rows:
        video = int(row["video_id"])
        if video not in best or preference(row) < preference(best[video]):
            best[video] = row
    kept = []
    for row in rows:
        keep = best[int(row["video_id"])]
        if row is keep:
            kept.append(row)
        else:
            dead.append((row, f"duplicate (request_id, video_id) = ({int(row['request_id'])}, "
                              f"{int(row['video_id'])}): the {stage_of(keep)} row is kept"))
    return kept
