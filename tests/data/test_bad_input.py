"""Hostile RecFlow input: every bad row is a dead letter with its reason, counts add up, no crash."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfcascade.data import read_requests, simulate
from tfcascade.data.schema import HISTORY_COLUMNS, row_problem

DAY = "2024-01-13"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    simulate(folder, "tiny", seed=4, days=1, requests_per_day=12)
    return folder


def _copy(clean: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(clean, tmp_path / "raw")
    return tmp_path / "raw"


def _frame(folder: Path) -> pd.DataFrame:
    return pd.read_feather(folder / "all_stage" / f"{DAY}.feather")


def _table(folder: Path, sub: str) -> dict:
    return pickle.loads((folder / sub / f"{DAY}.pkl").read_bytes())


def _write_table(folder: Path, sub: str, table: dict) -> None:
    (folder / sub / f"{DAY}.pkl").write_bytes(pickle.dumps(table))


def _read(folder: Path):
    skipped, counts = [], {}
    records = list(read_requests(folder, stages=2, skipped=skipped, counts=counts))
    assert counts["input_rows"] == counts["used_rows"] + counts["dead_letter_rows"], counts
    assert counts["dead_letter_rows"] == len(skipped)
    return records, skipped, counts


@pytest.mark.parametrize("column,value,reason", [
    ("video_id", np.inf, "field 'video_id'=inf is not finite"),
    ("video_id", -np.inf, "field 'video_id'=-inf is not finite"),
    ("video_id", 1e30, "field 'video_id'=1e+30 is not an int64 integer"),
    ("video_id", np.nan, "field 'video_id'=nan is not finite"),
    ("request_id", np.inf, "field 'request_id'=inf is not finite"),
    ("playing_time", np.nan, "field 'playing_time'=nan is not finite"),
    ("playing_time", np.inf, "field 'playing_time'=inf is not finite"),
    ("age", 2.5, "field 'age'=2.5 is not an int64 integer"),
    ("author_id", -3, "field 'author_id'=-3.0 is a negative id"),
    ("rank_neg", 7, "unknown stage flag value rank_neg=7.0 (expected 0 or 1)"),
])
def test_a_bad_value_is_one_dead_letter_row(clean, tmp_path, column, value, reason):
    folder = _copy(clean, tmp_path)
    frame = _frame(folder).astype({column: "float64"})
    frame.loc[3, column] = value
    frame.to_feather(folder / "all_stage" / f"{DAY}.feather")
    _, skipped, counts = _read(folder)
    assert counts["input_rows"] >= len(frame)
    assert reason in [r for _, r in skipped]
    request = None if column == "request_id" else int(frame.request_id[3])
    assert (request, reason) in skipped


def test_non_numbers_are_named():
    row = {"request_id": 1, "video_id": "abc"}
    assert row_problem(row).startswith("missing field") or "has type str" in (row_problem(row) or "")
    from tfcascade.data.schema import value_problem

    assert value_problem("video_id", "abc") == "field 'video_id'='abc' has type str, expected a number"
    assert value_problem("video_id", True) == "field 'video_id'=True has type bool, expected a number"


def test_duplicate_rows_keep_the_most_advanced_stage(clean, tmp_path):
    folder = _copy(clean, tmp_path)
    frame = _frame(folder)
    gt_row = frame[frame.rank_pos == 1].iloc[0]
    copy = gt_row.copy()
    copy[["rank_pos", "rerank_pos", "rerank_neg", "realshow"]] = 0
    copy["rank_neg"] = 1
    frame = pd.concat([frame.iloc[:2], copy.to_frame().T.astype(frame.dtypes), frame.iloc[2:]], ignore_index=True)
    frame.to_feather(folder / "all_stage" / f"{DAY}.feather")
    records, skipped, _ = _read(folder)
    rid, vid = int(gt_row.request_id), int(gt_row.video_id)
    assert (rid, f"duplicate (request_id, video_id) = ({rid}, {vid}): the {_stage(gt_row)} row is kept") in skipped
    record = next(r for r in records if int(r["request_id"]) == rid)
    assert list(record["video_id"]).count(vid) == 1
    assert record["label"][list(record["video_id"]).index(vid)] == 30 - gt_row.rank_index


def _stage(row) -> str:
    from tfcascade.data.schema import stage_of

    return stage_of(row.to_dict())


def test_all_stage_and_request_id_dict_must_agree(clean, tmp_path):
    folder = _copy(clean, tmp_path)
    frame = _frame(folder)
    entries = _table(folder, "request_id_dict")
    requests = sorted(entries)
    # 1. a request only in all_stage; 2. an item only in all_stage; 3. an item only in request_id_dict.
    del entries[requests[0]]
    only_rows = frame[frame.request_id == requests[1]].iloc[0]
    for stage in list(entries[requests[1]]):
        items = entries[requests[1]][stage]
        entries[requests[1]][stage] = items[items[:, 0] != only_rows.video_id]
    extra = entries[requests[2]]["prerank_neg"][:1].copy()
    extra[0, 0] = 99_999
    entries[requests[2]]["prerank_neg"] = np.concatenate([entries[requests[2]]["prerank_neg"], extra])
    # 4. a request only in request_id_dict.
    entries[10**6] = {"coarse_neg": extra.copy()}
    _write_table(folder, "request_id_dict", entries)
    records, skipped, counts = _read(folder)
    assert counts["input_rows"] == len(frame) + 2
    n0 = int((frame.request_id == requests[0]).sum())
    assert skipped.count((requests[0], f"request {requests[0]} is in all_stage but not in request_id_dict")) == n0
    flags = sorted(f for f in ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg",
                               "prerank_neg") if only_rows[f] == 1)
    assert (requests[1], f"video {only_rows.video_id} of request {requests[1]}: all_stage flags {flags} but "
                         "request_id_dict lists []") in skipped
    assert (requests[2], f"video 99999 is in request_id_dict['prerank_neg'] of request {requests[2]} but has "
                         "no usable all_stage row") in skipped
    assert (10**6, f"video 99999 is in request_id_dict['coarse_neg'] of request {10**6} but has no usable "
                   "all_stage row") in skipped
    assert requests[0] not in {int(r["request_id"]) for r in records}


@pytest.mark.parametrize("corrupt,reason", [
    (lambda h: h.astype(float) * np.nan, "history row 0 column 'video_id'=nan is not an int64 integer"),
    (lambda h: h.astype(str), "history has dtype <U"),
    (lambda h: h[1:], "history has shape (49, 10), expected (50, 10)"),
    (lambda h: [[1, 2], [3]], "history is not an array"),
    (lambda h: None, "request {rid} is not in seq_effective_50_dict"),
])
def test_a_bad_history_dead_letters_its_request(clean, tmp_path, corrupt, reason):
    folder = _copy(clean, tmp_path)
    histories = _table(folder, "seq_effective_50_dict")
    rid = sorted(histories)[3]
    value = corrupt(histories[rid])
    if value is None:
        del histories[rid]
    else:
        histories[rid] = value
    _write_table(folder, "seq_effective_50_dict", histories)
    records, skipped, _ = _read(folder)
    assert rid not in {int(r["request_id"]) for r in records}
    mine = [r for q, r in skipped if q == rid]
    assert mine and all(reason.format(rid=rid) in r for r in mine), mine[:1]
    assert len(mine) == int((_frame(folder).request_id == rid).sum())


def test_history_columns_follow_the_format(clean):
    """The record's history is the valid rows (request_timestamp > 0), newest first."""
    histories = _table(clean, "seq_effective_50_dict")
    records = {int(r["request_id"]): r for r in read_requests(clean, stages=2)}
    ts = HISTORY_COLUMNS.index("request_timestamp")
    for rid, seq in histories.items():
        valid = seq[seq[:, ts] > 0]
        assert (seq[: len(seq) - len(valid)] == 0).all()  # padding first
        want = valid[::-1, 0]
        got = records[rid]["hist_video_id"]
        np.testing.assert_array_equal(got[: len(want)], want)
        assert (got[len(want):] == -1).all()


CORRUPTIONS = st.lists(st.tuples(
    st.sampled_from(["video_id", "request_id", "age", "playing_time", "rank_pos", "rank_index", "category_level_two"]),
    st.sampled_from([np.inf, -np.inf, np.nan, 1e30, -1.0, 0.5, 2.0, 7.0]),
    st.integers(0, 10**6)), max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CORRUPTIONS, st.lists(st.integers(0, 10**6), max_size=3), st.lists(st.integers(0, 10**6), max_size=3))
def test_random_corruptions_never_crash_and_counts_add_up(clean, tmp_path_factory, values, duplicates, dropped):
    folder = _copy(clean, tmp_path_factory.mktemp("h"))
    frame = _frame(folder).astype("float64")
    for column, value, at in values:
        frame.loc[at % len(frame), column] = value
    frame = pd.concat([frame, frame.iloc[[d % len(frame) for d in duplicates]]], ignore_index=True)
    frame.to_feather(folder / "all_stage" / f"{DAY}.feather")
    entries = _table(folder, "request_id_dict")
    for d in dropped:
        rid = sorted(entries)[d % len(entries)]
        entries[rid].pop(sorted(entries[rid])[0], None)
    _write_table(folder, "request_id_dict", entries)
    records, skipped, counts = _read(folder)
    assert counts["input_rows"] >= len(frame)
    for record in records:  # what is used is clean: one row per video, ids in int64 and >= 0
        videos = record["video_id"][record["mask"] > 0]
        assert len(set(videos.tolist())) == len(videos) and (videos >= 0).all()


def test_a_ranked_row_without_its_position_is_dead(clean):
    """Found by the corruption test: a rank_pos row with rank_index = −1 has no graded label."""
    row = _frame(clean).query("rank_pos == 1 and rerank_pos == 0").iloc[0].to_dict()
    assert row_problem(row) is None
    assert row_problem(dict(row, rank_index=-1)) == (
        "a rank_pos row needs its rank_index (the graded label), got rank_index=-1")
    top = _frame(clean).query("rerank_pos == 1").iloc[0].to_dict()
    assert "needs its rerank_index" in row_problem(dict(top, rerank_index=-1))


def test_a_duplicate_of_the_same_stage_keeps_one_row_whatever_order_the_rows_arrive_in():
    """Runners (Dask, Dataflow) deliver a request's rows in any order: the kept row must not
    depend on it."""
    import itertools

    from tfcascade.data.assemble import _deduplicate

    base = {"request_id": 5, "video_id": 9, "rank_pos": 0, "rank_neg": 1, "rerank_pos": 0, "rerank_neg": 0,
            "coarse_neg": 0, "prerank_neg": 0, "realshow": 0, "rank_index": 3}
    rows = [dict(base, author_id=a) for a in (7, 3, 11)] + [dict(base, video_id=2, author_id=1)]
    kept = set()
    for order in itertools.permutations(rows):
        dead: list = []
        out = _deduplicate(list(order), dead)
        assert len(out) == 2 and len(dead) == 2
        kept.add(tuple(sorted((r["video_id"], r["author_id"]) for r in out)))
    assert kept == {((2, 1), (9, 3))}
