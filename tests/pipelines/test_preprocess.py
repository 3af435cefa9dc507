"""Beam preprocessing on the tiny preset: conservation of rows, dead letters, exact round trip."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.preprocess import run_preprocess
from tfcascade.data import load_metadata, load_vocabularies, make_dataset, read_requests, simulate
from tfcascade.data.examples import index_record


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    """Tiny logs with injected malformed rows (the test knows each one's reason)."""
    raw = tmp_path_factory.mktemp("raw")
    simulate(raw, "tiny", seed=5, days=3, requests_per_day=40)
    path = raw / "all_stage" / "2024-01-13.feather"
    frame = pd.read_feather(path)
    frame["video_id"] = frame["video_id"].astype(float)
    frame.loc[0, "video_id"] = np.nan
    frame.loc[1, "rank_neg"] = 7
    frame.loc[[2], list(frame.columns[13:20])] = 0  # no stage flag at all
    frame["age"] = frame["age"].astype(float)
    frame.loc[3, "age"] = 2.5
    victim = frame.request_id.unique()[-1]
    frame = frame[~((frame.request_id == victim) & (frame.rank_pos == 1))]
    frame.reset_index(drop=True).to_feather(path)
    out = tmp_path_factory.mktemp("out")
    stats = run_preprocess(str(raw), str(out), stages=2, eval_days=1)
    return raw, out, stats, victim, int((frame.request_id == victim).sum())


def test_counts_are_conserved(corrupted):
    raw, out, stats, _, victim_rows = corrupted
    total = sum(len(pd.read_feather(p)) for p in (raw / "all_stage").glob("*.feather"))
    assert stats["input_rows"] == total
    assert stats["input_rows"] == stats["used_rows"] + stats["dead_letter_rows"]
    assert stats["dead_letter_rows"] == 4 + victim_rows
    assert stats["requests_written"] == {"train": 79, "eval": 40}
    assert json.loads((out / "stats.json").read_text()) == stats


def test_dead_letters_carry_reasons(corrupted):
    _, out, _, victim, victim_rows = corrupted
    lines = [json.loads(line) for p in (out / "dead_letter").glob("*.jsonl") for line in p.read_text().splitlines()]
    reasons = [d["reason"] for d in lines]
    assert "field 'video_id' is NaN" in reasons
    assert "unknown stage flag value rank_neg=7 (expected 0 or 1)" in reasons
    assert "row has no stage flag set" in reasons
    assert "field 'age'=2.5 is not an integer" in reasons
    gt = [d for d in lines if d["reason"].startswith("request has 0 ground-truth")]
    assert len(gt) == victim_rows and all(d["row"]["request_id"] == victim for d in gt)


def test_records_parse_back_exactly(corrupted):
    raw, out, _, _, _ = corrupted
    meta = load_metadata(out)
    assert meta["train_days"] == ["2024-01-13", "2024-01-14"] and meta["eval_days"] == ["2024-01-15"]
    vocab = load_vocabularies(out)
    assert all(meta["vocab_sizes"][f] == len(ids) + 1 for f, ids in vocab.items())
    lookup = {f: {r: i + 1 for i, r in enumerate(ids)} for f, ids in vocab.items()}
    for split, days, negatives, size in (("train", meta["train_days"], 0, 40), ("eval", meta["eval_days"], 160, 200)):
        expected = {int(r["request_id"]): index_record(r, lookup)
                    for r in read_requests(raw, days=days, eval_negatives=negatives)}
        seen = 0
        for batch in make_dataset(out, split, batch_size=32, shuffle=False):
            assert batch["video_id"].shape[1] == size
            for i in range(batch["mask"].shape[0]):
                want = expected[int(batch["request_id"][i])]
                for key, value in batch.items():
                    np.testing.assert_array_equal(value[i].numpy(), np.asarray(want[key]), err_msg=key)
                seen += 1
        assert seen == len(expected)


def test_bad_input_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocess(str(tmp_path / "missing"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no all_stage"):
        run_preprocess(str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="stages"):
        run_preprocess(str(tmp_path / "empty"), str(tmp_path / "out"), stages=4)
