"""Simulator: determinism, the RecFlow layout and schema, stage structure, knobs."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recflow_fixture import check_format

from tfcascade.data.schema import COLUMNS, STAGE_FLAGS, validate_frame
from tfcascade.data.simulator import simulate


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "simulation.json":  # holds timings
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    simulate(tmp_path / "a", "tiny", seed=3, days=2)
    simulate(tmp_path / "b", "tiny", seed=3, days=2)
    simulate(tmp_path / "c", "tiny", seed=4, days=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_schema_and_stage_structure(tmp_path):
    stats = simulate(tmp_path, "tiny", seed=0, days=2, requests_per_day=30)
    days = ["2024-01-13", "2024-01-14"]
    assert stats["days"] == days and stats["requests"] == 60
    for sub, ext in (("all_stage", "feather"), ("realshow", "feather"), ("request_id_dict", "pkl"),
                     ("seq_effective_50_dict", "pkl")):
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == [f"{d}.{ext}" for d in days]
    assert (tmp_path / "ground_truth" / "model.npz").exists()
    assert check_format(tmp_path) == []
    frame = pd.read_feather(tmp_path / "all_stage" / f"{days[0]}.feather")
    validate_frame(frame, "sim")
    assert list(frame.columns) == list(COLUMNS) and (frame.dtypes == np.int64).all()
    assert len(frame) + len(pd.read_feather(tmp_path / "all_stage" / f"{days[1]}.feather")) == stats["stage_samples"]
    for _, req in frame.groupby("request_id"):
        flags = req[list(STAGE_FLAGS)]
        # Default stage sizes (200, 100, 60, 24, 12, 6), 10 logged negatives per stage.
        assert flags["prerank_neg"].sum() == 10 and flags["coarse_neg"].sum() == 10
        assert flags["rank_pos"].sum() == 10 and flags["rerank_pos"].sum() == 10
        assert flags["rank_neg"].sum() >= 10 and flags["rerank_neg"].sum() >= 10
        assert flags["realshow"].sum() == 6
        assert req.video_id.is_unique
        # RecFlow's definitions: rank_pos / rerank_pos are the top 10 of their stage.
        assert sorted(req[req.rank_pos == 1].rank_index) == list(range(10))
        assert (req[req.rank_neg == 1].rank_index >= 10).all()
        assert sorted(req[req.rerank_pos == 1].rerank_index) == list(range(10))
        assert (req[req.rerank_neg == 1].rerank_index >= 10).all()
        assert (req[(req.rerank_pos == 1) | (req.rerank_neg == 1)].rank_index < 24).all()
        assert (req[(req.prerank_neg == 1) | (req.coarse_neg == 1)].rank_index == -1).all()
        assert (req[req.realshow == 1].rerank_index < 6).all()
        assert req.request_timestamp.nunique() == 1 and req.request_timestamp.iloc[0] > 10**12  # ms
    shown = pd.read_feather(tmp_path / "realshow" / f"{days[0]}.feather")
    assert (shown.realshow == 1).all() and len(shown) == 30 * 6
    assert (shown.playing_time > 0).all() and (frame[frame.realshow == 0].playing_time == 0).all()
    effective = shown.playing_time >= 0.3 * shown.duration
    assert (effective == (shown.effective_view == 1)).all()
    with open(tmp_path / "others" / "id_cnt.pkl", "rb") as fh:
        counts = pickle.load(fh)
    assert counts["video_id"] == counts["photo_id"] == 2000 and counts["user_id"] == 200
    # The histories grow with the effective views of earlier days.
    with open(tmp_path / "seq_effective_50_dict" / f"{days[1]}.pkl", "rb") as fh:
        seqs = pickle.load(fh)
    day0 = set(zip(frame.user_id[frame.effective_view == 1], frame.video_id[frame.effective_view == 1]))
    later = pd.read_feather(tmp_path / "all_stage" / f"{days[1]}.feather").groupby("request_id").user_id.first()
    seen = {(int(later[rid]), int(v)) for rid, seq in seqs.items() for v in seq[seq[:, 7] > 0][:, 0]}
    assert day0 & seen


def test_later_stages_agree_more_with_the_truth(tmp_path):
    simulate(tmp_path, "tiny", seed=1, days=1, requests_per_day=200)
    frame = pd.read_feather(tmp_path / "all_stage" / "2024-01-13.feather")
    truth = pd.read_feather(tmp_path / "ground_truth" / "2024-01-13.feather")
    rel = truth.true_relevance.to_numpy()
    means = [rel[frame[s].to_numpy() == 1].mean() for s in ("prerank_neg", "coarse_neg", "rank_neg", "rank_pos", "rerank_pos")]
    assert np.all(np.diff(means) > 0), means


@pytest.mark.parametrize("knobs,match", [
    ({"preset": "huge"}, "preset"),
    ({"users": 0}, "users=0"),
    ({"stage_sizes": (10, 20, 5, 4, 3, 2)}, "stage_sizes"),
    ({"noise": (1.0, -1.0, 0, 0, 0)}, "noise"),
    ({"colour": 3}, "unknown simulator knobs"),
])
def test_bad_knobs(tmp_path, knobs, match):
    with pytest.raises(ValueError, match=match):
        simulate(tmp_path, **knobs)
