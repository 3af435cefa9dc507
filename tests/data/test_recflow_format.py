"""The RecFlow fixture and format checker: a well-formed folder passes, corruptions are caught."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recflow_fixture import check_format, write_fixture

DAY = "2024-01-13"


def _load(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _edit_pickle(root: Path, name: str, edit: Callable[[dict], None]) -> None:
    path = root / name
    obj = _load(path)
    edit(obj)
    _dump(obj, path)


def _edit_frame(root: Path, name: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = root / name
    edit(pd.read_feather(path)).reset_index(drop=True).to_feather(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    write_fixture(tmp_path, day=DAY, requests=3, seed=0)
    return tmp_path


@pytest.mark.parametrize("requests, seed", [(3, 0), (1, 1), (7, 2)])
def test_fixture_passes_the_checker(tmp_path, requests, seed):
    write_fixture(tmp_path, requests=requests, seed=seed)
    assert check_format(tmp_path) == []


def test_fixture_truth_matches_its_files(tmp_path):
    truth = write_fixture(tmp_path, day=DAY, requests=3, seed=0)
    frame = pd.read_feather(tmp_path / "all_stage" / f"{DAY}.feather")
    request_dict = _load(tmp_path / "request_id_dict" / f"{DAY}.pkl")
    histories = _load(tmp_path / "seq_effective_50_dict" / f"{DAY}.pkl")
    assert set(truth) == set(frame.request_id)
    assert sorted(len(t["hist_video_id"]) for t in truth.values()) == [0, 17, 50]
    assert len({t["user"]["user_id"] for t in truth.values()}) == 3
    for request_id, t in truth.items():
        rows = frame[frame.request_id == request_id]
        stages = t["stages"]
        assert rows.video_id.is_unique and len(rows) == 42
        assert rows.request_timestamp.iloc[0] == t["request_timestamp"] >= 10**12
        for name, value in t["user"].items():
            assert (rows[name] == value).all()
        sizes = {"realshow": 6, "rerank_pos": 10, "rerank_neg": 12, "rank_pos": 10,
                 "rank_neg": 12, "coarse_neg": 10, "prerank_neg": 10}
        assert {name: len(v) for name, v in stages.items()} == sizes
        assert stages["rerank_pos"] <= stages["rank_pos"] | stages["rank_neg"]
        assert stages["realshow"] <= stages["rerank_pos"]
        assert sorted(t["rank_index"][v] for v in stages["rank_pos"]) == list(range(10))
        assert sorted(t["rank_index"][v] for v in stages["rank_neg"]) == list(range(10, 22))
        assert {t["rank_index"][v] for v in stages["coarse_neg"] | stages["prerank_neg"]} == {-1}
        assert sorted(t["rerank_index"][v] for v in stages["realshow"]) == list(range(6))
        listed = request_dict[request_id]["rank_pos"][:, 0].tolist()
        assert [t["rank_index"][v] for v in listed] == list(range(10))
        seq = histories[request_id]
        n = len(t["hist_video_id"])
        assert t["hist_video_id"] == seq[50 - n:, 0][::-1].tolist()
        assert t["hist_author_id"] == seq[50 - n:, 1][::-1].tolist()


def _float_request_dict(root: Path) -> None:
    def edit(d):
        first = next(iter(d))
        d[first]["rank_pos"] = d[first]["rank_pos"].astype(np.float64)
    _edit_pickle(root, f"request_id_dict/{DAY}.pkl", edit)


def _short_history(root: Path) -> None:
    def edit(d):
        first = next(iter(d))
        d[first] = d[first][1:]
    _edit_pickle(root, f"seq_effective_50_dict/{DAY}.pkl", edit)


def _missing_id_cnt_key(root: Path) -> None:
    _edit_pickle(root, "others/id_cnt.pkl", lambda d: d.pop("photo_id"))


def _seconds_timestamps(root: Path) -> None:
    def edit(frame):
        frame["request_timestamp"] //= 1000
        return frame
    _edit_frame(root, f"all_stage/{DAY}.feather", edit)
    _edit_frame(root, f"realshow/{DAY}.feather", edit)


def _unknown_listed_item(root: Path) -> None:
    def edit(d):
        first = next(iter(d))
        extra = d[first]["rank_neg"][:1].copy()
        extra[0, 0] = 0 if extra[0, 0] else 1
        d[first]["rank_neg"] = np.concatenate([d[first]["rank_neg"], extra])
    _edit_pickle(root, f"request_id_dict/{DAY}.pkl", edit)


def _padding_after_valid(root: Path) -> None:
    def edit(d):
        for request_id, seq in d.items():
            if 0 < (seq[:, 7] > 0).sum() < 50:
                d[request_id] = seq[::-1].copy()
    _edit_pickle(root, f"seq_effective_50_dict/{DAY}.pkl", edit)


def _flag_outside_0_1(root: Path) -> None:
    def edit(frame):
        frame.loc[0, "rank_neg"] = 2
        return frame
    _edit_frame(root, f"all_stage/{DAY}.feather", edit)


def _realshow_row_dropped(root: Path) -> None:
    _edit_frame(root, f"realshow/{DAY}.feather", lambda frame: frame.iloc[1:])


def _missing_day(root: Path) -> None:
    (root / "seq_effective_50_dict" / f"{DAY}.pkl").unlink()


def _rank_pos_out_of_order(root: Path) -> None:
    def edit(d):
        first = next(iter(d))
        d[first]["rank_pos"] = d[first]["rank_pos"][::-1].copy()
    _edit_pickle(root, f"request_id_dict/{DAY}.pkl", edit)


def _feature_disagrees(root: Path) -> None:
    def edit(d):
        first = next(iter(d))
        d[first]["coarse_neg"][0, 2] += 1
    _edit_pickle(root, f"request_id_dict/{DAY}.pkl", edit)


def _id_out_of_range(root: Path) -> None:
    def edit(d):
        d["author_id"] -= 1
    _edit_pickle(root, "others/id_cnt.pkl", edit)


CORRUPTIONS = {
    "float request_id_dict array": (_float_request_dict, "dtype float64, expected int64"),
    "[49, 10] history": (_short_history, "shape (49, 10)"),
    "missing id_cnt key": (_missing_id_cnt_key, "missing keys ['photo_id']"),
    "seconds instead of ms": (_seconds_timestamps, "below 10**12"),
    "listed item missing from all_stage": (_unknown_listed_item, "not flagged in all_stage"),
    "padding after valid rows": (_padding_after_valid, "padding must come first"),
    "flag outside 0/1": (_flag_outside_0_1, "rank_neg takes values other than 0/1"),
    "realshow row dropped": (_realshow_row_dropped, "realshow == 1"),
    "day missing from one folder": (_missing_day, "missing days"),
    "rank_pos out of rank order": (_rank_pos_out_of_order, "not in rank_index order"),
    "feature differs from all_stage": (_feature_disagrees, "duration differs"),
    "id outside its count": (_id_out_of_range, "author_id outside [0, 19)"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_checker_reports_corruption(folder, name):
    corrupt, expected = CORRUPTIONS[name]
    corrupt(folder)
    violations = check_format(folder)
    assert any(expected in v for v in violations), violations
