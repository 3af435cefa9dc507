"""Reader: LCRON sample organisation, labels, masks, eval negatives, bad files."""

import datetime

import numpy as np
import pandas as pd
import pytest

from tfcascade import features as F
from tfcascade.data import read_requests, simulate
from tfcascade.data.schema import SchemaError


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("recflow")
    simulate(out, "tiny", seed=0, days=2, requests_per_day=40)
    return out


def test_two_stage_organisation_matches_the_logs(logs):
    records = list(read_requests(logs, days=["2024-01-13"], stages=2))
    frame = pd.read_feather(logs / "all_stage" / "2024-01-13.feather")
    assert len(records) == 40
    for rec in records[:10]:
        req = frame[frame.request_id == rec["request_id"]]
        assert rec["video_id"].shape == (40,) and rec["mask"].sum() == 40
        counts = {name: int((rec["stage"] == F.STAGE_CODES[name]).sum()) for name in F.TWO_STAGE_LAYOUT}
        assert counts == F.TWO_STAGE_LAYOUT
        # Ground truth: the 10 best-ranked rank_pos items with label 30 - rank_index.
        best = req[req.rank_pos == 1].sort_values("rank_index").head(10)
        gt = rec["stage"] == F.STAGE_CODES["rank_pos"]
        assert set(rec["video_id"][gt]) == set(best.video_id)
        by_video = dict(zip(best.video_id, best.rank_index))
        for vid, lab in zip(rec["video_id"][gt], rec["label"][gt]):
            assert lab == 30 - by_video[vid]
        assert set(rec["label"][~gt]) <= {5.0, 6.0, 7.0}
        assert rec["label"][gt].min() > rec["label"][~gt].max()
        assert rec["user_id"] == req.user_id.iloc[0]
        assert rec["hist_video_id"].shape == (50,)


def test_three_stage_and_eval_negatives(logs):
    records = list(read_requests(logs, days=["2024-01-14"], stages=3, eval_negatives=160))
    rec = records[0]
    assert rec["video_id"].shape == (210,)
    assert (rec["stage"] == F.STAGE_CODES["sampled_neg"]).sum() == 160
    assert (rec["stage"] == F.STAGE_CODES["rerank_pos"]).sum() == 10
    own = set(pd.read_feather(logs / "all_stage" / "2024-01-14.feather").query(
        f"request_id == {rec['request_id']}").video_id)
    negs = rec["video_id"][rec["stage"] == F.STAGE_CODES["sampled_neg"]]
    assert not own & set(negs) and len(set(negs)) == 160
    assert np.all(rec["label"][rec["stage"] == F.STAGE_CODES["sampled_neg"]] == 0)
    # Deterministic: same records on a second read.
    again = list(read_requests(logs, days=["2024-01-14"], stages=3, eval_negatives=160))[0]
    assert all(np.array_equal(rec[k], again[k]) for k in rec)


def test_three_stage_segments_are_filled_per_flag_as_the_reference_reader(logs):
    """Each segment is the first 10 items of the request dict's list for its flag (the LCRON
    reader, ``dataset3.py``): an item that is both rank_neg and rerank_pos/neg fills a slot in
    both segments, so every simulated list is full."""
    import pickle

    day = "2024-01-13"
    request_dict = pickle.loads((logs / "request_id_dict" / f"{day}.pkl").read_bytes())
    frame = pd.read_feather(logs / "all_stage" / f"{day}.feather")
    rerank_index = dict(zip(zip(frame.request_id, frame.video_id), frame.rerank_index))
    labels = {"rerank_neg": 8.0, "rank_neg": 7.0, "coarse_neg": 6.0, "prerank_neg": 5.0}
    in_two_segments = 0
    for rec in read_requests(logs, days=[day], stages=3):
        rid = int(rec["request_id"])
        want = []
        for name, size in F.THREE_STAGE_LAYOUT.items():
            for video in request_dict[rid][name][:size, 0].tolist():
                label = 30.0 - rerank_index[rid, video] if name == "rerank_pos" else labels[name]
                want.append((F.STAGE_CODES[name], video, label))
        got = list(zip(rec["stage"].tolist(), rec["video_id"].tolist(), rec["label"].tolist()))
        assert sorted(got) == sorted(want)
        assert rec["mask"].sum() == 50
        in_two_segments += len(rec["video_id"]) - len(set(rec["video_id"].tolist()))
    assert in_two_segments > 0  # the simulated days have such items: the test can fail


def _drop(folder, day, frame, index):
    """Removes all_stage rows and their request_id_dict items (both sources agree)."""
    import pickle

    path = folder / "request_id_dict" / f"{day}.pkl"
    entries = pickle.loads(path.read_bytes())
    for _, row in frame.loc[index].iterrows():
        entry = entries[int(row.request_id)]
        for stage in list(entry):
            entry[stage] = entry[stage][entry[stage][:, 0] != row.video_id]
    path.write_bytes(pickle.dumps(entries))
    frame.drop(index=index).reset_index(drop=True).to_feather(folder / "all_stage" / f"{day}.feather")


def test_short_requests_are_padded_and_missing_ground_truth_reported(tmp_path):
    simulate(tmp_path, "tiny", seed=2, days=1, requests_per_day=5)
    frame = pd.read_feather(tmp_path / "all_stage" / "2024-01-13.feather")
    first, second = frame.request_id.unique()[:2]
    drop = frame[(frame.request_id == first) & (frame.prerank_neg == 1)].index[:4]
    no_gt = frame[(frame.request_id == second) & (frame.rank_pos == 1)].index
    _drop(tmp_path, "2024-01-13", frame, drop.union(no_gt))
    skipped, counts = [], {}
    records = {int(r["request_id"]): r for r in read_requests(tmp_path, stages=2, skipped=skipped, counts=counts)}
    left = int((frame.request_id == second).sum()) - len(no_gt)
    assert second not in records
    assert skipped == [(second, "request has 0 ground-truth (rank_pos) items, needs >= 10")] * left
    rec = records[first]
    assert rec["mask"].sum() == 36 and (rec["label"] == -1).sum() == 4
    assert np.all(rec["video_id"][rec["mask"] == 0] == -1)
    assert counts["input_rows"] == len(frame) - len(drop) - len(no_gt) == counts["used_rows"] + counts["dead_letter_rows"]


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_requests(tmp_path / "nope"))
    (tmp_path / "all_stage").mkdir()
    with pytest.raises(FileNotFoundError, match="no all_stage"):
        list(read_requests(tmp_path))
    (tmp_path / "all_stage" / "2024-01-01.feather").write_bytes(b"not a feather file")
    with pytest.raises(SchemaError, match="cannot be read"):
        list(read_requests(tmp_path))
    pd.DataFrame({"request_id": [1]}).to_feather(tmp_path / "all_stage" / "2024-01-01.feather")
    with pytest.raises(SchemaError, match="missing columns"):
        list(read_requests(tmp_path))


@pytest.mark.parametrize("stages", [2, 3])
def test_reads_a_real_format_folder_built_from_the_spec(tmp_path, stages):
    """The fixture is written straight from docs/recflow_format.md, not by the simulator."""
    from recflow_fixture import UPLOAD_EPOCH_S, check_format, write_fixture

    truth = write_fixture(tmp_path, requests=3, seed=1)
    assert check_format(tmp_path) == []
    skipped, counts = [], {}
    records = {int(r["request_id"]): r for r in read_requests(tmp_path, stages=stages, skipped=skipped, counts=counts)}
    assert skipped == [] and sorted(records) == sorted(truth)
    assert counts["used_rows"] == counts["input_rows"]
    gt_flag = "rank_pos" if stages == 2 else "rerank_pos"
    for rid, want in truth.items():
        rec = records[rid]
        when = datetime.datetime.fromtimestamp(want["request_timestamp"] / 1000, datetime.timezone.utc)
        assert {k: int(rec[k]) for k in F.USER_FEATURES} == {
            **want["user"], "request_weekday": when.weekday(), "request_hour": when.hour,
            "request_minute": when.minute}
        real = rec["mask"] > 0
        for vid, weekday, hour, minute in zip(rec["video_id"][real], rec["upload_weekday"][real],
                                              rec["upload_hour"][real], rec["upload_minute"][real]):
            upload = datetime.datetime.fromtimestamp(UPLOAD_EPOCH_S - 3_600 * int(vid), datetime.timezone.utc)
            assert (weekday, hour, minute) == (upload.weekday(), upload.hour, upload.minute)
        gt = rec["stage"] == F.STAGE_CODES[gt_flag]
        assert set(rec["video_id"][gt].tolist()) == want["stages"][gt_flag]
        for name in F.TWO_STAGE_LAYOUT if stages == 2 else F.THREE_STAGE_LAYOUT:
            videos = set(rec["video_id"][rec["stage"] == F.STAGE_CODES[name]].tolist())
            assert videos <= want["stages"][name], name
        for vid, lab, st in zip(rec["video_id"], rec["label"], rec["stage"]):
            if stages == 2 and st == F.STAGE_CODES["rank_pos"]:
                assert lab == 30 - want["rank_index"][int(vid)]
            if stages == 3 and st == F.STAGE_CODES["rerank_pos"]:
                assert lab == 30 - want["rerank_index"][int(vid)]
        n = len(want["hist_video_id"])
        np.testing.assert_array_equal(rec["hist_video_id"][:n], want["hist_video_id"])
        np.testing.assert_array_equal(rec["hist_author_id"][:n], want["hist_author_id"])
        for feature, item in F.HISTORY_TO_ITEM.items():
            np.testing.assert_array_equal(rec[feature][:n], want["history"][item])
            assert (rec[feature][n:] == -1).all()
        assert (rec["hist_video_id"][n:] == -1).all()
