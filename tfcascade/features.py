"""The feature contract shared by the data pipeline, the models and serving.

One training example is one request: user features, the user's behaviour history and a
fixed-length list of ``n`` candidate items (padded; ``mask`` says which are real). All ids
are vocabulary indices produced by the preprocessing pipeline; index 0 is padding / unknown.

Batched tensors (``B`` requests, ``n`` items, ``H`` = ``HISTORY_LENGTH``)::

    user_id, device_id, age, gender, province,
    request_weekday, request_hour, request_minute     int64 [B]
    hist_video_id, hist_author_id,
    hist_category_level_two, hist_category_level_one,
    hist_upload_type                                  int64 [B, H]    (0 = no item)
    video_id, author_id, category_level_one,
    category_level_two, upload_type,
    upload_weekday, upload_hour, upload_minute        int64 [B, n]
    label                                             float32 [B, n]  graded, -1 = padding
    stage                                             int64 [B, n]    STAGE_CODES, -1 = padding
    rank_index                                        int64 [B, n]    -1 where not ranked
    mask                                              float32 [B, n]  1 = real item

The time features are the weekday (Monday = 0), hour and minute, in UTC, of the request's
``request_timestamp`` and of each item's ``upload_timestamp`` (:func:`time_parts`); as raw ids
they go through vocabularies like every other feature. The LCRON reference code feeds the same
six fields and the five history fields to its DSSM and DIN (arXiv 2503.09492, ``models.py``).

Graded labels (LCRON, arXiv 2503.09492, "list-wise supervision"): an item from a later stage
beats one from an earlier stage; within a stage the better rank wins.
"""

from __future__ import annotations

HISTORY_LENGTH = 50

# Time features: name -> (the RecFlow timestamp column, its units per second, the part).
TIME_FEATURES = {
    "request_weekday": ("request_timestamp", 1000, "weekday"),
    "request_hour": ("request_timestamp", 1000, "hour"),
    "request_minute": ("request_timestamp", 1000, "minute"),
    "upload_weekday": ("upload_timestamp", 1, "weekday"),
    "upload_hour": ("upload_timestamp", 1, "hour"),
    "upload_minute": ("upload_timestamp", 1, "minute"),
}
USER_FEATURES = ("user_id", "device_id", "age", "gender", "province", "request_weekday", "request_hour",
                 "request_minute")
HISTORY_FEATURES = ("hist_video_id", "hist_author_id", "hist_category_level_two", "hist_category_level_one",
                    "hist_upload_type")
ITEM_FEATURES = ("video_id", "author_id", "category_level_one", "category_level_two", "upload_type",
                 "upload_weekday", "upload_hour", "upload_minute")
LIST_FEATURES = ITEM_FEATURES + ("label", "stage", "rank_index", "mask")

# History feature -> the item feature whose vocabulary (and embedding table) it shares.
HISTORY_TO_ITEM = {"hist_video_id": "video_id", "hist_author_id": "author_id",
                   "hist_category_level_two": "category_level_two",
                   "hist_category_level_one": "category_level_one", "hist_upload_type": "upload_type"}

# RecFlow stage samples, ordered from the earliest stage to the last. ``sampled_neg`` are the
# extra negatives drawn from other requests at evaluation time.
STAGES = ("sampled_neg", "prerank_neg", "coarse_neg", "rank_neg", "rank_pos", "rerank_neg", "rerank_pos")
STAGE_CODES = {name: code for code, name in enumerate(STAGES)}
PADDING_STAGE = -1
PADDING_LABEL = -1.0

# Items per stage in one training request (LCRON sample organisation).
TWO_STAGE_LAYOUT = {"rank_pos": 10, "rank_neg": 10, "coarse_neg": 10, "prerank_neg": 10}
THREE_STAGE_LAYOUT = {
    "rerank_pos": 10, "rerank_neg": 10, "rank_neg": 10, "coarse_neg": 10, "prerank_neg": 10,
}
EVAL_EXTRA_NEGATIVES = 160


def graded_label(stage: str, rank_index: int = -1, rerank_index: int = -1, stages: int = 2) -> float:
    """Graded relevance of one logged item, as the LCRON reference code encodes it.

    Two stages: ``30 - rank_index`` for rank_pos, 7 / 6 / 5 for rank_neg / coarse_neg /
    prerank_neg. Three stages: ``30 - rerank_index`` for rerank_pos, 8 for rerank_neg, then
    7 / 6 / 5 as above. Sampled negatives get 0. Ranked labels are clipped from below (at 9)
    so that an item a later stage passed on always beats every item of an earlier stage,
    whatever its logged position; the ground truth of a request is then exactly its top-K
    graded labels. Equal labels form the tie blocks the permutation losses use
    (``losses/permutation_terms.py``).

    Args:
      stage: one of ``STAGES``.
      rank_index: position given by the ranking stage (0 = best), for rank_pos / rerank_*.
      rerank_index: position given by the re-ranking stage, for rerank_pos.
      stages: 2 or 3 (the cascade the labels are for).

    Returns:
      The graded label as a float.
    """
    if stage not in STAGE_CODES:
        raise ValueError(f"stage must be one of {STAGES}, got stage={stage!r}")
    if stages not in (2, 3):
        raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
    if stages == 3 and stage == "rerank_pos":
        return max(30.0 - _checked_index(rerank_index, "rerank_index"), 9.0)
    if stages == 3 and stage == "rerank_neg":
        return 8.0
    fixed = {"rank_neg": 7.0, "coarse_neg": 6.0, "prerank_neg": 5.0, "sampled_neg": 0.0}
    if stage in fixed:
        return fixed[stage]
    # rank_pos; in two stages rerank_neg / rerank_pos items are rank_pos items too.
    return max(30.0 - _checked_index(rank_index, "rank_index"), 9.0)


def _checked_index(value: int, name: str) -> float:
    if value < 0:
        raise ValueError(f"{name} must be >= 0 for a ranked item, got {name}={value}")
    return float(value)


def time_parts(timestamp: int, per_second: int = 1) -> dict[str, int]:
    """``{"weekday", "hour", "minute"}`` of a Unix timestamp, in UTC (weekday: Monday = 0, as
    Python's ``tm_wday``; the reference code adds 1 to each and reads the host's local time).

    Args:
      timestamp: time since 1970-01-01 00:00 UTC, in units of 1 / ``per_second`` s.
      per_second: 1000 for RecFlow's ``request_timestamp`` (ms), 1 for ``upload_timestamp`` (s).

    Returns:
      The weekday (0–6), hour (0–23) and minute (0–59), which the preprocessing stores as raw ids.
    """
    seconds = int(timestamp) // per_second
    return {"weekday": (seconds // 86400 + 3) % 7, "hour": seconds // 3600 % 24, "minute": seconds // 60 % 60}


def time_features(row, prefix: str) -> dict[str, int]:
    """The ``<prefix>_weekday`` / ``_hour`` / ``_minute`` features of a row holding the
    timestamp column they come from (``prefix``: ``"request"`` or ``"upload"``)."""
    out = {}
    for name, (column, per_second, part) in TIME_FEATURES.items():
        if name.startswith(prefix + "_"):
            out[name] = time_parts(row[column], per_second)[part]
    return out


def ground_truth_stages(stages: int) -> tuple[str, ...]:
    """Stage samples that form the ground-truth set CS_gt (rank_pos for 2 stages, rerank_pos for 3).

    In a two-stage list every item the ranking stage passed on is logged as ``rank_pos``
    (re-ranking is not modelled there), so the 10 rank_pos items are the ground truth.
    """
    if stages == 2:
        return ("rank_pos",)
    if stages == 3:
        return ("rerank_pos",)
    raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
