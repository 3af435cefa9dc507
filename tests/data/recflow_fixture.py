"""A hand-built RecFlow folder for reader tests, and a checker of the RecFlow format.

Both follow ``docs/recflow_format.md`` directly, with numpy, pandas and pickle only, so that
they are an independent statement of the format rather than a second copy of the simulator.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HISTORY_LENGTH = 50
STAGE_FLAGS = (
    "realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg", "prerank_neg",
)
FEEDBACK = ("effective_view", "long_view", "like", "follow", "forward", "comment")
USER_COLUMNS = ("user_id", "device_id", "age", "gender", "province")
REQUEST_COLUMNS = ("request_id", "user_id", "request_timestamp", "device_id", "age", "gender",
                   "province")
ITEM_COLUMNS = ("video_id", "author_id", "category_level_one", "category_level_two",
                "upload_type", "upload_timestamp", "duration")
ALL_STAGE_COLUMNS = (
    *REQUEST_COLUMNS, *ITEM_COLUMNS, *STAGE_FLAGS, "rank_index", "rerank_index", "playing_time",
    *FEEDBACK,
)
REQUEST_DICT_COLUMNS = ("video_id", "author_id", "duration", "category_level_two", "upload_type",
                        "upload_timestamp", "category_level_one", "effective_view")
HISTORY_COLUMNS = ("video_id", "author_id", "category_level_two", "category_level_one",
                   "upload_type", "upload_timestamp", "duration", "request_timestamp",
                   "playing_time", "request_id")
ID_COUNT_KEYS = ("user_id", "device_id", "age", "gender", "province", "video_id", "photo_id",
                 "author_id", "category_level_one", "category_level_two", "upload_type")
ID_COLUMNS = ("user_id", "device_id", "age", "gender", "province", "video_id", "author_id",
              "category_level_one", "category_level_two", "upload_type")
ORDERED_STAGES = {"rank_pos": "rank_index", "rerank_pos": "rerank_index"}
LISTING_ORDER = {"realshow": "rerank_index", "rerank_pos": "rerank_index",
                 "rerank_neg": "rerank_index", "rank_pos": "rank_index", "rank_neg": "rank_index",
                 "coarse_neg": "video_id", "prerank_neg": "video_id"}
SUBFOLDERS = {"all_stage": ".feather", "realshow": ".feather", "request_id_dict": ".pkl",
              "seq_effective_50_dict": ".pkl"}
MS_THRESHOLD = 10**12
MAX_EXAMPLES = 3

RANK_POS, RANK_NEG, COARSE_NEG, PRERANK_NEG = 10, 12, 10, 10
RERANK_POS, REALSHOW = 10, 6
HISTORY_VALID = (0, 17, 50)
N_AUTHORS, N_CAT_TWO, N_CAT_ONE, N_UPLOAD_TYPES = 20, 12, 4, 3
N_AGES, N_PROVINCES = 8, 5
UPLOAD_EPOCH_S = 1_704_067_200


def _video_features(video_id: np.ndarray) -> dict[str, np.ndarray]:
    """Item features as a fixed function of the video id, so every file agrees on them."""
    v = np.asarray(video_id, dtype=np.int64)
    cat_two = v % N_CAT_TWO
    return {
        "video_id": v,
        "author_id": v % N_AUTHORS,
        "category_level_one": cat_two % N_CAT_ONE,
        "category_level_two": cat_two,
        "upload_type": v % N_UPLOAD_TYPES,
        "upload_timestamp": UPLOAD_EPOCH_S - 3_600 * v,
        "duration": 5_000 + (v * 7_919) % 60_000,
    }


def _stage_dict(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """One request's ``request_id_dict`` entry from its all_stage rows, in stage order."""
    entry = {}
    for flag in STAGE_FLAGS:
        part = rows[rows[flag] == 1]
        if not part.empty:
            part = part.sort_values([LISTING_ORDER[flag], "video_id"], kind="stable")
            entry[flag] = part[list(REQUEST_DICT_COLUMNS)].to_numpy(dtype=np.int64)
    return entry


def write_fixture(folder: str | Path, day: str = "2024-01-13", requests: int = 3,
                  seed: int = 0) -> dict[int, dict[str, Any]]:
    """Write one day of a small RecFlow folder and return what a reader should find in it.

    Every request has one user, 42 distinct videos (10 rank_pos with rank_index 0..9, 12
    rank_neg with rank_index 10..21, 10 coarse_neg and 10 prerank_neg with rank_index -1);
    the 22 rank-stage videos all enter the rerank stage (rerank_index 0..21, the first 10
    rerank_pos, the rest rerank_neg) and the best 6 rerank_pos are shown. Histories have
    0, 17 and 50 valid rows in turn.

    Args:
      folder: the RecFlow root to create (its subfolders are created as needed).
      day: the day, ``YYYY-MM-DD``.
      requests: how many requests to write.
      seed: seeds the choice of rerank order, feedback, histories and row order.

    Returns:
      ``{request_id: truth}`` where ``truth`` has ``"user"`` (``dict[str, int]`` of
      user_id, device_id, age, gender, province), ``"request_timestamp"`` (``int``, ms),
      ``"stages"`` (``dict[str, set[int]]``: the video ids carrying each of the seven flags),
      ``"rank_index"`` and ``"rerank_index"`` (``dict[int, int]``: video id to position,
      -1 where the video never entered that stage), ``"hist_video_id"`` and
      ``"hist_author_id"`` (``list[int]``, newest first, valid rows only) and ``"history"``
      (the same for each of the five item columns a history row records, by column name).
    """
    root = Path(folder)
    rng = np.random.default_rng(seed)
    per_request = RANK_POS + RANK_NEG + COARSE_NEG + PRERANK_NEG
    n_videos = per_request * requests
    day_start_ms = int(pd.Timestamp(day, tz="UTC").value // 1_000_000)
    frames, truth, histories = [], {}, {}
    for r in range(requests):
        request_id = 10_000 + r
        request_ts = day_start_ms + (3_600 + 13 * r) * 1_000
        user = {"user_id": r, "device_id": r, "age": r % N_AGES, "gender": r % 2,
                "province": r % N_PROVINCES}
        videos = np.arange(r * per_request, (r + 1) * per_request, dtype=np.int64)
        frame = pd.DataFrame(_video_features(videos))
        for name in STAGE_FLAGS:
            frame[name] = 0
        frame["rank_index"] = -1
        frame["rerank_index"] = -1
        n_rank = RANK_POS + RANK_NEG
        frame.loc[:RANK_POS - 1, "rank_pos"] = 1
        frame.loc[RANK_POS:n_rank - 1, "rank_neg"] = 1
        frame.loc[n_rank:n_rank + COARSE_NEG - 1, "coarse_neg"] = 1
        frame.loc[n_rank + COARSE_NEG:, "prerank_neg"] = 1
        frame.loc[:n_rank - 1, "rank_index"] = np.arange(n_rank)
        rerank_order = rng.permutation(n_rank)
        frame.loc[rerank_order, "rerank_index"] = np.arange(n_rank)
        frame.loc[rerank_order[:RERANK_POS], "rerank_pos"] = 1
        frame.loc[rerank_order[RERANK_POS:], "rerank_neg"] = 1
        frame.loc[rerank_order[:REALSHOW], "realshow"] = 1
        shown = frame["realshow"].to_numpy() == 1
        fraction = np.where(shown, rng.uniform(0.0, 1.5, len(frame)), 0.0)
        frame["playing_time"] = np.round(fraction * frame["duration"]).astype(np.int64)
        frame["effective_view"] = (shown & (fraction >= 0.3)).astype(np.int64)
        frame["long_view"] = (shown & (fraction >= 1.0)).astype(np.int64)
        for name in ("like", "follow", "forward", "comment"):
            frame[name] = (shown & (rng.random(len(frame)) < 0.3)).astype(np.int64)
        frame["request_id"] = request_id
        frame["request_timestamp"] = request_ts
        for name, value in user.items():
            frame[name] = value
        frames.append(frame[list(ALL_STAGE_COLUMNS)].astype(np.int64))

        n_valid = HISTORY_VALID[r % len(HISTORY_VALID)]
        seq = np.zeros((HISTORY_LENGTH, len(HISTORY_COLUMNS)), dtype=np.int64)
        if n_valid:
            watched = rng.integers(0, n_videos, size=n_valid)
            feats = _video_features(watched)
            age_ms = (n_valid - np.arange(n_valid)) * 60_000
            rows = {name: feats[name] for name in ITEM_COLUMNS}
            rows["request_timestamp"] = request_ts - age_ms
            rows["playing_time"] = (feats["duration"] * rng.uniform(0.3, 1.2, n_valid)).astype(
                np.int64)
            rows["request_id"] = 100_000 + 100 * r + np.arange(n_valid)
            seq[-n_valid:] = np.stack([rows[name] for name in HISTORY_COLUMNS], axis=1)
        histories[request_id] = seq
        valid = seq[seq[:, HISTORY_COLUMNS.index("request_timestamp")] > 0][::-1]
        truth[request_id] = {
            "user": user,
            "request_timestamp": request_ts,
            "stages": {name: set(frame.loc[frame[name] == 1, "video_id"].tolist())
                       for name in STAGE_FLAGS},
            "rank_index": dict(zip(frame["video_id"].tolist(), frame["rank_index"].tolist())),
            "rerank_index": dict(zip(frame["video_id"].tolist(),
                                     frame["rerank_index"].tolist())),
            "hist_video_id": valid[:, 0].tolist(),
            "hist_author_id": valid[:, 1].tolist(),
            "history": {name: valid[:, HISTORY_COLUMNS.index(name)].tolist() for name in
                        ("video_id", "author_id", "category_level_two", "category_level_one", "upload_type")},
        }

    all_stage = pd.concat(frames, ignore_index=True)
    all_stage = all_stage.iloc[rng.permutation(len(all_stage))].reset_index(drop=True)
    request_dict = {int(rid): _stage_dict(rows) for rid, rows in all_stage.groupby("request_id")}
    id_cnt = {
        "user_id": requests, "device_id": requests, "age": min(requests, N_AGES),
        "gender": min(requests, 2), "province": min(requests, N_PROVINCES),
        "video_id": n_videos, "photo_id": n_videos, "author_id": N_AUTHORS,
        "category_level_one": N_CAT_ONE, "category_level_two": N_CAT_TWO,
        "upload_type": N_UPLOAD_TYPES,
    }
    for name in SUBFOLDERS:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "others").mkdir(parents=True, exist_ok=True)
    all_stage.to_feather(root / "all_stage" / f"{day}.feather")
    all_stage[all_stage["realshow"] == 1].reset_index(drop=True).to_feather(
        root / "realshow" / f"{day}.feather")
    _dump(request_dict, root / "request_id_dict" / f"{day}.pkl")
    _dump(histories, root / "seq_effective_50_dict" / f"{day}.pkl")
    _dump(id_cnt, root / "others" / "id_cnt.pkl")
    return truth


def _dump(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _load(path: Path) -> object:
    with open(path, "rb") as f:
        return pickle.load(f)


def _load_dict(root: Path, where: str, report: _Report) -> dict | None:
    """The pickled dict at ``root / where``, or None (reported) when it holds something else."""
    table = _load(root / where)
    if not isinstance(table, dict):
        report.add(where, f"not a dict but {type(table).__name__}")
        return None
    return table


def _examples(items: list) -> str:
    shown = ", ".join(str(x) for x in items[:MAX_EXAMPLES])
    more = f" (+{len(items) - MAX_EXAMPLES} more)" if len(items) > MAX_EXAMPLES else ""
    return shown + more


class _Report:
    """Collects violations, each prefixed with the file it concerns."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.violations.append(f"{where}: {message}")


def check_format(folder: str | Path) -> list[str]:
    """Every way ``folder`` departs from the RecFlow format of ``docs/recflow_format.md``.

    Args:
      folder: a RecFlow root (all_stage/, realshow/, request_id_dict/,
        seq_effective_50_dict/, others/id_cnt.pkl).

    Returns:
      One human-readable line per violation, naming the file; empty when the folder is
      well-formed.
    """
    root = Path(folder)
    report = _Report()
    days: dict[str, set[str]] = {}
    for name, suffix in SUBFOLDERS.items():
        sub = root / name
        if not sub.is_dir():
            report.add(name, "folder missing")
            continue
        days[name] = set()
        for path in sorted(sub.iterdir()):
            if path.suffix != suffix or not DAY_PATTERN.match(path.stem):
                report.add(f"{name}/{path.name}", f"not a <YYYY-MM-DD>{suffix} day file")
            else:
                days[name].add(path.stem)
    every_day = set().union(*days.values()) if days else set()
    if days and not every_day:
        report.add("all_stage", "no day files")
    for name, found in days.items():
        missing = sorted(every_day - found)
        if missing:
            report.add(name, f"missing days {_examples(missing)} found in other folders")

    id_cnt = _check_id_cnt(root, report)
    for day in sorted(every_day):
        if all(day in found for found in days.values()):
            _check_day(root, day, id_cnt, report)
    return report.violations


def _check_id_cnt(root: Path, report: _Report) -> dict[str, int]:
    where = "others/id_cnt.pkl"
    path = root / "others" / "id_cnt.pkl"
    if not path.is_file():
        report.add(where, "file missing")
        return {}
    id_cnt = _load(path)
    if not isinstance(id_cnt, dict):
        report.add(where, f"not a dict but {type(id_cnt).__name__}")
        return {}
    missing = [key for key in ID_COUNT_KEYS if key not in id_cnt]
    if missing:
        report.add(where, f"missing keys {missing}")
    good = {}
    for key in ID_COUNT_KEYS:
        value = id_cnt.get(key)
        if key in id_cnt and not (isinstance(value, (int, np.integer)) and value > 0):
            report.add(where, f"{key} = {value!r} is not a positive integer")
        elif key in id_cnt:
            good[key] = int(value)
    if "video_id" in good and "photo_id" in good and good["video_id"] != good["photo_id"]:
        report.add(where, f"photo_id = {good['photo_id']} differs from video_id = "
                          f"{good['video_id']}")
    return good


def _check_ids(where: str, name: str, values: np.ndarray, id_cnt: dict[str, int],
               report: _Report) -> None:
    if name not in id_cnt or values.size == 0:
        return
    bad = values[(values < 0) | (values >= id_cnt[name])]
    if bad.size:
        report.add(where, f"{name} outside [0, {id_cnt[name]}): {_examples(np.unique(bad).tolist())}")


def _check_day(root: Path, day: str, id_cnt: dict[str, int], report: _Report) -> None:
    where = f"all_stage/{day}.feather"
    frame = pd.read_feather(root / "all_stage" / f"{day}.feather")
    missing = [c for c in ALL_STAGE_COLUMNS if c not in frame.columns]
    if missing:
        report.add(where, f"missing columns {missing}")
        return
    typed = True
    for column in ALL_STAGE_COLUMNS:
        dtype = frame[column].dtype
        ok = (dtype.kind in "iuf") if column == "playing_time" else dtype == np.int64
        if not ok:
            expected = "int or float" if column == "playing_time" else "int64"
            report.add(where, f"column {column} has dtype {dtype}, expected {expected}")
            typed = False
    if not typed:
        return
    small = np.unique(frame.loc[frame["request_timestamp"] < MS_THRESHOLD, "request_id"])
    if small.size:
        report.add(where, f"request_timestamp below 10**12 (not milliseconds) in requests "
                          f"{_examples(small.tolist())}")
    for column in (*STAGE_FLAGS, *FEEDBACK):
        values = set(np.unique(frame[column]).tolist())
        if not values <= {0, 1}:
            report.add(where, f"{column} takes values other than 0/1: {sorted(values - {0, 1})}")
    no_flag = frame[list(STAGE_FLAGS)].sum(axis=1) == 0
    if no_flag.any():
        report.add(where, f"{int(no_flag.sum())} rows carry no stage flag")
    dup = frame.duplicated(["request_id", "video_id"])
    if dup.any():
        pairs = frame.loc[dup, ["request_id", "video_id"]].itertuples(index=False, name=None)
        report.add(where, f"(request_id, video_id) logged twice: {_examples(list(pairs))}")
    per_request = frame.groupby("request_id")[list(REQUEST_COLUMNS[1:])].nunique()
    mixed = per_request.index[(per_request > 1).any(axis=1)].tolist()
    if mixed:
        report.add(where, f"requests with more than one user / timestamp: {_examples(mixed)}")
    per_video = frame.groupby("video_id")[list(ITEM_COLUMNS[1:])].nunique()
    mixed = per_video.index[(per_video > 1).any(axis=1)].tolist()
    if mixed:
        report.add(where, f"videos with conflicting item features: {_examples(mixed)}")
    for column in ID_COLUMNS:
        _check_ids(where, column, frame[column].to_numpy(), id_cnt, report)

    _check_realshow(root, day, frame, report)
    _check_request_dict(root, day, frame, id_cnt, report)
    _check_history(root, day, frame, id_cnt, report)


def _check_realshow(root: Path, day: str, frame: pd.DataFrame, report: _Report) -> None:
    where = f"realshow/{day}.feather"
    shown = pd.read_feather(root / "realshow" / f"{day}.feather")
    if list(shown.columns) != list(frame.columns):
        report.add(where, "columns differ from all_stage")
        return
    expected = frame[frame["realshow"] == 1]
    keys = ["request_id", "video_id"]
    left = shown.sort_values(keys).reset_index(drop=True)
    right = expected.sort_values(keys).reset_index(drop=True)
    if not left.dtypes.equals(right.dtypes):
        report.add(where, "dtypes differ from all_stage")
    elif left.shape != right.shape or not left.equals(right):
        report.add(where, f"not the all_stage rows with realshow == 1 ({len(shown)} rows, "
                          f"{len(expected)} expected)")


def _check_request_dict(root: Path, day: str, frame: pd.DataFrame, id_cnt: dict[str, int],
                        report: _Report) -> None:
    where = f"request_id_dict/{day}.pkl"
    request_dict = _load_dict(root, where, report)
    if request_dict is None:
        return
    pieces, unreadable = [], set()
    for request_id, stages in request_dict.items():
        if not isinstance(stages, dict):
            report.add(where, f"request {request_id}: value is {type(stages).__name__}, "
                              "expected a dict of stage arrays")
            unreadable.update((int(request_id), stage) for stage in STAGE_FLAGS)
            continue
        for stage, arr in stages.items():
            label = f"request {request_id} stage {stage}"
            problem = None
            if stage not in STAGE_FLAGS:
                problem = "unknown stage label"
            elif not isinstance(arr, np.ndarray):
                problem = f"{type(arr).__name__}, expected a numpy array"
            elif arr.dtype != np.int64:
                problem = f"dtype {arr.dtype}, expected int64"
            elif arr.ndim != 2 or arr.shape[1] != len(REQUEST_DICT_COLUMNS):
                problem = f"shape {arr.shape}, expected [n, 8]"
            elif arr.shape[0] == 0:
                problem = "empty array (a stage with no item is left out)"
            if problem:
                report.add(where, f"{label}: {problem}")
                unreadable.add((int(request_id), stage))
                continue
            piece = pd.DataFrame(arr, columns=list(REQUEST_DICT_COLUMNS))
            piece.insert(0, "stage", stage)
            piece.insert(0, "request_id", int(request_id))
            piece["row"] = np.arange(len(piece))
            pieces.append(piece)
    listed = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(
        columns=["request_id", "stage", *REQUEST_DICT_COLUMNS, "row"])

    dict_requests = {int(r) for r in request_dict}
    frame_requests = set(frame["request_id"].astype(int).tolist())
    if frame_requests - dict_requests:
        report.add(where, f"requests of all_stage missing: "
                          f"{_examples(sorted(frame_requests - dict_requests))}")
    if dict_requests - frame_requests:
        report.add(where, f"requests not in all_stage: "
                          f"{_examples(sorted(dict_requests - frame_requests))}")

    flagged = frame.melt(id_vars=[c for c in frame.columns if c not in STAGE_FLAGS],
                         value_vars=list(STAGE_FLAGS), var_name="stage", value_name="flag")
    flagged = flagged[flagged["flag"] == 1]
    keys = ["request_id", "stage", "video_id"]
    merged = listed.merge(flagged, on=keys, how="outer", suffixes=("", "_all"), indicator=True)
    only_dict = merged[merged["_merge"] == "left_only"]
    only_frame = merged[merged["_merge"] == "right_only"]
    if unreadable:
        skip = [(r, st) in unreadable for r, st in zip(only_frame["request_id"],
                                                        only_frame["stage"])]
        only_frame = only_frame[~np.asarray(skip, dtype=bool)]
    if len(only_dict):
        triples = list(only_dict[keys].itertuples(index=False, name=None))
        report.add(where, f"(request, stage, video) not flagged in all_stage: "
                          f"{_examples(triples)}")
    if len(only_frame):
        triples = list(only_frame[keys].itertuples(index=False, name=None))
        report.add(where, f"(request, stage, video) flagged in all_stage but not listed: "
                          f"{_examples(triples)}")
    both = merged[merged["_merge"] == "both"]
    for column in REQUEST_DICT_COLUMNS[1:]:
        differ = both[both[column].astype(np.int64) != both[f"{column}_all"].astype(np.int64)]
        if len(differ):
            triples = list(differ[keys].itertuples(index=False, name=None))
            report.add(where, f"{column} differs from all_stage for {_examples(triples)}")
    for stage, position in ORDERED_STAGES.items():
        part = both[both["stage"] == stage].sort_values(["request_id", "row"])
        steps = part.groupby("request_id")[position].apply(lambda s: bool(
            (np.diff(s.to_numpy()) > 0).all()))
        unordered = steps.index[~steps].tolist()
        if unordered:
            report.add(where, f"{stage} rows not in {position} order for requests "
                              f"{_examples(unordered)}")
    for column, name in ((0, "video_id"), (1, "author_id"), (3, "category_level_two"),
                         (4, "upload_type"), (6, "category_level_one")):
        if len(listed):
            _check_ids(where, name, listed[REQUEST_DICT_COLUMNS[column]].to_numpy(np.int64),
                       id_cnt, report)


def _check_history(root: Path, day: str, frame: pd.DataFrame, id_cnt: dict[str, int],
                   report: _Report) -> None:
    where = f"seq_effective_50_dict/{day}.pkl"
    histories = _load_dict(root, where, report)
    if histories is None:
        return
    request_ts = frame.groupby("request_id")["request_timestamp"].first().to_dict()
    missing = sorted(set(request_ts) - {int(r) for r in histories})
    if missing:
        report.add(where, f"requests of all_stage without a history: {_examples(missing)}")
    shape = (HISTORY_LENGTH, len(HISTORY_COLUMNS))
    ts_col = HISTORY_COLUMNS.index("request_timestamp")
    valid_rows = []
    for request_id, seq in histories.items():
        label = f"request {request_id}"
        if not isinstance(seq, np.ndarray):
            report.add(where, f"{label}: {type(seq).__name__}, expected a numpy array")
            continue
        if seq.dtype != np.int64:
            report.add(where, f"{label}: dtype {seq.dtype}, expected int64")
            continue
        if seq.shape != shape:
            report.add(where, f"{label}: shape {seq.shape}, expected [50, 10]")
            continue
        valid = seq[:, ts_col] > 0
        if (seq[~valid] != 0).any():
            report.add(where, f"{label}: padding rows (request_timestamp <= 0) not all zero")
        n_valid = int(valid.sum())
        if n_valid and not valid[HISTORY_LENGTH - n_valid:].all():
            report.add(where, f"{label}: valid rows not at the end (padding must come first)")
            continue
        rows = seq[valid]
        if (rows[:, ts_col] < MS_THRESHOLD).any():
            report.add(where, f"{label}: request_timestamp below 10**12 (not milliseconds)")
        if (np.diff(rows[:, ts_col]) < 0).any():
            report.add(where, f"{label}: valid rows not oldest first")
        if int(request_id) in request_ts and n_valid and \
                rows[:, ts_col].max() > request_ts[int(request_id)]:
            report.add(where, f"{label}: history later than the request")
        valid_rows.append(rows)
    if valid_rows:
        rows = np.concatenate(valid_rows)
        for name in ("video_id", "author_id", "category_level_two", "category_level_one",
                     "upload_type"):
            _check_ids(where, name, rows[:, HISTORY_COLUMNS.index(name)], id_cnt, report)
