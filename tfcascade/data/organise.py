"""Turns one request's log rows into a fixed-length training list (LCRON sample organisation).

Shared by the in-memory reader (``recflow.read_requests``) and the Beam pipeline, so both
produce identical records. A record holds RAW ids; padding is −1 in raw id lists.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from tfcascade import features as F
from tfcascade.data.schema import ITEM_COLUMNS, REQUEST_COLUMNS

RAW_PADDING = -1
GROUND_TRUTH_SIZE = 10


class RequestProblem(ValueError):
    """A request cannot become a training list (the reason goes to the dead letter)."""


def layout(stages: int) -> dict[str, int]:
    if stages == 2:
        return dict(F.TWO_STAGE_LAYOUT)
    if stages == 3:
        return dict(F.THREE_STAGE_LAYOUT)
    raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")


# The ground-truth segments take their best-placed items; the others keep their logged order,
# as the reference reader takes them.
_ORDERED_BY = {"rank_pos": "rank_index", "rerank_pos": "rerank_index"}


def _sort_key(name: str, row: Mapping):
    index = _ORDERED_BY.get(name)
    return (row[index], row["video_id"]) if index else (0,)


def stable_hash(*parts: int) -> int:
    """A platform-independent 64-bit hash of integers (Python's hash() is salted)."""
    digest = hashlib.blake2b(np.asarray(parts, np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def organise_request(rows: Sequence[Mapping], history: Mapping | None, stages: int = 2,
                     negatives: Sequence[Mapping] = (), num_negatives: int = 0, seed: int = 0) -> dict:
    """Builds one request's record.

    Args:
      rows: the request's validated log rows (dicts with the schema's columns).
      history: ``{item feature: [...]}`` newest first for every ``features.HISTORY_TO_ITEM``
        value (``schema.history_items``), or None.
      stages: 2 or 3 — which list layout and graded labels (``features.py``).
      negatives: a pool of item dicts (:func:`item_of`) from other requests, for evaluation.
      num_negatives: how many sampled negatives to append (label 0, stage ``sampled_neg``).
      seed: mixed into the per-request hash that orders the list and picks the negatives.

    Returns:
      A record of numpy arrays keyed as in ``tfcascade/features.py`` (raw ids, −1 padding),
      plus ``request_id``. Items are shuffled deterministically (seeded by the request id) so
      that no position carries the label.

    Raises:
      RequestProblem: the request has fewer than 10 ground-truth items.
    """
    plan = layout(stages)
    gt_stage = F.ground_truth_stages(stages)[0]
    # Every segment takes the rows that carry its flag, as the reference readers fill each segment
    # from the request dict's list for that flag: an item that the ranking stage placed beyond
    # its top 10 and the re-ranking stage then ordered is both rank_neg and rerank_pos/neg, and
    # fills a slot in each of the two segments of a three-stage list.
    by_stage = {name: [row for row in rows if row[name]] for name in plan}
    n_gt = len(by_stage[gt_stage])
    if n_gt < GROUND_TRUTH_SIZE:
        raise RequestProblem(
            f"request has {n_gt} ground-truth ({gt_stage}) items, needs >= {GROUND_TRUTH_SIZE}")
    chosen: list[tuple[str, Mapping]] = []
    for name, count in plan.items():
        picked = sorted(by_stage[name], key=lambda r, n=name: _sort_key(n, r))[:count]
        chosen += [(name, r) for r in picked]
    first = rows[0]
    request_id = int(first["request_id"])
    own = {int(r["video_id"]) for r in rows}
    extra = _pick_negatives(negatives, own, request_id, num_negatives, seed)
    n_list = sum(plan.values()) + num_negatives
    rng = np.random.default_rng(stable_hash(request_id, stages, seed))
    order = rng.permutation(len(chosen) + len(extra))
    items = [chosen[i] if i < len(chosen) else ("sampled_neg", extra[i - len(chosen)]) for i in order]
    features = [r if name == "sampled_neg" else item_of(r) for name, r in items]
    record = {"request_id": np.int64(request_id)}
    user = {**first, **F.time_features(first, "request")}
    for key in F.USER_FEATURES:
        record[key] = np.int64(user[key])
    for key in F.ITEM_FEATURES:
        col = np.full(n_list, RAW_PADDING, np.int64)
        col[: len(items)] = [item[key] for item in features]
        record[key] = col
    label = np.full(n_list, F.PADDING_LABEL, np.float32)
    stage = np.full(n_list, F.PADDING_STAGE, np.int64)
    rank_index = np.full(n_list, -1, np.int64)
    for i, (name, r) in enumerate(items):
        ri = int(r.get("rank_index", -1))
        label[i] = F.graded_label(name, ri, int(r.get("rerank_index", -1)), stages=stages)
        stage[i] = F.STAGE_CODES[name]
        rank_index[i] = ri
    record.update(label=label, stage=stage, rank_index=rank_index,
                  mask=(stage != F.PADDING_STAGE).astype(np.float32))
    hist = history or {}
    for feat, item_key in F.HISTORY_TO_ITEM.items():
        values = list(hist.get(item_key, []))[: F.HISTORY_LENGTH]
        col = np.full(F.HISTORY_LENGTH, RAW_PADDING, np.int64)
        col[: len(values)] = values
        record[feat] = col
    return record


def _pick_negatives(pool: Sequence[Mapping], own: set, request_id: int, count: int, seed: int = 0) -> list:
    if count <= 0:
        return []
    candidates = [p for p in pool if int(p["video_id"]) not in own]
    if len(candidates) < count:
        raise RequestProblem(
            f"negative pool has {len(candidates)} items outside the request, needs {count}")
    rng = np.random.default_rng(stable_hash(request_id, 7919, seed))
    return [candidates[i] for i in rng.choice(len(candidates), count, replace=False)]


def negative_pool_key(row: Mapping) -> int:
    """Deterministic priority of a logged item for the evaluation negative pool."""
    return zlib.crc32(np.asarray([row["request_id"], row["video_id"]], np.int64).tobytes())


def item_of(row: Mapping) -> dict:
    """An all_stage row's item features (``features.ITEM_FEATURES``, the upload time parts
    derived from its ``upload_timestamp``)."""
    derived = F.time_features(row, "upload")
    return {k: derived[k] if k in derived else int(row[k]) for k in F.ITEM_FEATURES}


__all__ = ["organise_request", "RequestProblem", "layout", "negative_pool_key", "item_of",
           "RAW_PADDING", "REQUEST_COLUMNS", "ITEM_COLUMNS"]
