"""Beam preprocessing on the tiny preset: conservation of rows, dead letters equal to the reader's,
exact round trip, refused outputs, empty splits, the vocabulary fingerprint, no runner download."""

import collections
import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfcascade.beam.preprocess import run_preprocess
from tfcascade.data import load_metadata, load_vocabularies, make_dataset, read_requests, simulate
from tfcascade.data.examples import index_record
from tfcascade.data.fingerprint import vocabulary_fingerprint
from tfcascade.data.schema import STAGE_FLAGS
from tfcascade.data.tfdata import EmptySplitError

DAY = "2024-01-13"


def write_hostile_logs(raw):
    """Simulates tiny logs into ``raw`` with hostile rows of every class.

    Returns:
      ``(frame, victim, bad_history)``: the corrupted all_stage frame of ``DAY``, the request
      left without ground truth and the request whose history holds a non-number.
    """
    simulate(raw, "tiny", seed=5, days=3, requests_per_day=40)
    path = raw / "all_stage" / f"{DAY}.feather"
    frame = pd.read_feather(path).astype({"video_id": float, "age": float, "playing_time": float, "request_id": float})
    frame.loc[0, "video_id"] = np.nan
    frame.loc[1, "rank_neg"] = 7
    frame.loc[[2], list(STAGE_FLAGS)] = 0  # no stage flag at all
    frame.loc[3, "age"] = 2.5
    frame.loc[4, "video_id"] = np.inf
    frame.loc[5, "video_id"] = 1e30
    frame.loc[6, "playing_time"] = np.inf
    frame.loc[7, "request_id"] = np.inf
    victim = frame.request_id.unique()[-1]
    frame = frame[~((frame.request_id == victim) & (frame.rank_pos == 1))]
    frame = pd.concat([frame, frame.iloc[[20]]], ignore_index=True)  # a duplicated row
    frame.to_feather(path)
    seqs = pickle.loads((raw / "seq_effective_50_dict" / f"{DAY}.pkl").read_bytes())
    bad_history = sorted(seqs)[5]
    seqs[bad_history] = seqs[bad_history].astype(object)
    seqs[bad_history][-1, 0] = "not a number"
    (raw / "seq_effective_50_dict" / f"{DAY}.pkl").write_bytes(pickle.dumps(seqs))
    return frame, victim, bad_history


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    """Tiny logs with hostile rows of every class (the test knows each one's reason)."""
    raw = tmp_path_factory.mktemp("raw")
    frame, victim, bad_history = write_hostile_logs(raw)
    out = tmp_path_factory.mktemp("out") / "data"
    stats = run_preprocess(str(raw), str(out), stages=2, eval_days=1)
    return raw, out, stats, frame, victim, bad_history


def _dead_letters(out):
    return [json.loads(line) for p in (out / "dead_letter").glob("*.jsonl") for line in p.read_text().splitlines()]


def test_counts_are_conserved(corrupted):
    raw, out, stats, frame, _, _ = corrupted
    total = sum(len(pd.read_feather(p)) for p in (raw / "all_stage").glob("*.feather"))
    assert stats["input_rows_by_source"]["all_stage"] == total
    assert stats["input_rows"] == stats["used_rows"] + stats["dead_letter_rows"] == len(_dead_letters(out)) + stats["used_rows"]
    assert json.loads((out / "stats.json").read_text()) == stats


def test_dead_letters_carry_reasons_and_equal_the_readers(corrupted):
    raw, out, stats, frame, victim, bad_history = corrupted
    lines = _dead_letters(out)
    reasons = collections.Counter(d["reason"] for d in lines)
    for reason in ("field 'video_id'=nan is not finite", "unknown stage flag value rank_neg=7 (expected 0 or 1)",
                   "row has no stage flag set", "field 'age'=2.5 is not an int64 integer",
                   "field 'video_id'=inf is not finite", "field 'video_id'=1e+30 is not an int64 integer",
                   "field 'playing_time'=inf is not finite", "field 'request_id'=inf is not finite"):
        assert reasons[reason] == 1, reason
    dup = frame.iloc[20]
    assert any(r.startswith(f"duplicate (request_id, video_id) = ({int(dup.request_id)}, {int(dup.video_id)})")
               for r in reasons)
    gt = [d for d in lines if d["reason"].startswith("request has 0 ground-truth")]
    assert len(gt) == int((frame.request_id == victim).sum()) and all(d["row"]["request_id"] == victim for d in gt)
    history = [d for d in lines if d["reason"].startswith(f"request {bad_history}: history has dtype object")]
    assert len(history) == int((frame.request_id == bad_history).sum())
    # The in-memory reader dead-letters exactly the same rows for the same reasons.
    skipped, counts = [], {}
    for day, negatives in ((DAY, 0), ("2024-01-14", 0), ("2024-01-15", 160)):
        list(read_requests(raw, days=[day], eval_negatives=negatives, skipped=skipped, counts=counts))
    assert collections.Counter(r for _, r in skipped) == reasons
    assert counts == {k: stats[k] for k in ("input_rows", "used_rows", "dead_letter_rows")}


def test_records_parse_back_exactly(corrupted):
    raw, out, _, _, _, _ = corrupted
    meta = load_metadata(out)
    assert meta["train_days"] == [DAY, "2024-01-14"] and meta["eval_days"] == ["2024-01-15"]
    vocab = load_vocabularies(out)
    assert all(meta["vocab_sizes"][f] == len(ids) + 1 for f, ids in vocab.items())
    assert meta["fingerprint"] == vocabulary_fingerprint(vocab, meta)
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


def test_fingerprint_changes_with_the_vocabularies_and_schema():
    meta = {"stages": 2, "train_list_size": 40, "eval_list_size": 200, "history_length": 50, "id_padding": 0}
    base = vocabulary_fingerprint({"video_id": [3, 5], "user_id": [1]}, meta)
    assert base == vocabulary_fingerprint({"user_id": [1], "video_id": [3, 5]}, dict(meta, eval_days=["x"]))
    assert base != vocabulary_fingerprint({"video_id": [5, 3], "user_id": [1]}, meta)
    assert base != vocabulary_fingerprint({"video_id": [3, 5], "user_id": [1]}, dict(meta, stages=3))
    assert base != vocabulary_fingerprint({"video_id": [3, 5], "user_id": [1], "age": []}, meta)


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("small_raw")
    simulate(raw, "tiny", seed=7, days=2, requests_per_day=12)
    return raw


def test_non_empty_output_is_refused_unless_overwrite(small_raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.tfrecord.gz").write_text("old shard")
    with pytest.raises(FileExistsError, match="is not empty.*--overwrite"):
        run_preprocess(str(small_raw), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["stale.tfrecord.gz"]
    stats = run_preprocess(str(small_raw), str(out), overwrite=True)
    assert not (out / "stale.tfrecord.gz").exists() and (out / "metadata.json").exists()
    assert stats["requests_written"] == {"train": 12, "eval": 12}
    assert not list(tmp_path.glob("out.tmp-*")) and not list(tmp_path.glob("out.old-*"))


def test_empty_eval_split_fails_and_leaves_no_output(small_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    path = raw / "all_stage" / "2024-01-14.feather"
    frame = pd.read_feather(path)
    frame.loc[:, "rank_pos"] = 0  # no ground truth on the eval day
    frame.to_feather(path)
    with pytest.raises(EmptySplitError, match=r"the eval split \(days 2024-01-14\) has no usable request"):
        run_preprocess(str(raw), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_no_runner_is_downloaded(small_raw, tmp_path, monkeypatch):
    from apache_beam.runners.portability import prism_runner

    def refuse(*args, **kwargs):
        raise AssertionError("the Prism runner was started")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    run_preprocess(str(small_raw), str(tmp_path / "out"))


def test_bad_input_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocess(str(tmp_path / "missing"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no all_stage"):
        run_preprocess(str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="stages"):
        run_preprocess(str(tmp_path / "empty"), str(tmp_path / "out"), stages=4)


def test_a_missing_source_file_is_named(small_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    (raw / "request_id_dict" / "2024-01-14.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="request_id_dict/2024-01-14.pkl"):
        run_preprocess(str(raw), str(tmp_path / "out"))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["video_id", "request_id", "user_id", "playing_time", "rank_pos"]),
                          st.sampled_from([np.inf, -np.inf, np.nan, 1e30, -2.0, 3.5]), st.integers(0, 10**6)),
                min_size=1, max_size=10), st.lists(st.integers(0, 10**6), max_size=3))
def test_random_corruptions_never_crash_the_pipeline(small_raw, tmp_path_factory, values, duplicates):
    root = tmp_path_factory.mktemp("hyp")
    raw = root / "raw"
    shutil.copytree(small_raw, raw)
    path = raw / "all_stage" / DAY
    frame = pd.read_feather(f"{path}.feather").astype("float64")
    for column, value, at in values:
        frame.loc[at % len(frame), column] = value
    frame = pd.concat([frame, frame.iloc[[d % len(frame) for d in duplicates]]], ignore_index=True)
    frame.to_feather(f"{path}.feather")
    stats = run_preprocess(str(raw), str(root / "out"))
    assert stats["input_rows"] == stats["used_rows"] + stats["dead_letter_rows"]
    assert stats["input_rows_by_source"]["all_stage"] == len(frame) + len(pd.read_feather(raw / "all_stage" / "2024-01-14.feather"))
    assert stats["dead_letter_rows"] >= 1


def published_outputs(out):
    """Everything a run publishes except stats.json, order-free: the examples of each split and
    the dead-letter lines as multisets, the vocabularies, metadata.json and schema.json."""
    import tensorflow as tf

    records = {split: collections.Counter(
        r.numpy() for r in tf.data.TFRecordDataset(sorted(str(f) for f in (out / split).glob("*.tfrecord.gz")),
                                                   compression_type="GZIP"))
        for split in ("train", "eval")}
    dead = collections.Counter(line for p in (out / "dead_letter").glob("*.jsonl") for line in p.read_text().splitlines())
    sidecars = {p.relative_to(out).as_posix(): p.read_text()
                for p in [*sorted((out / "vocab").iterdir()), out / "metadata.json", out / "schema.json"]}
    return {"records": records, "dead": dead, "sidecars": sidecars}


def test_request_shards_give_the_same_output_as_whole_days(corrupted, tmp_path):
    raw, out, stats, frame, _, _ = corrupted
    sharded = run_preprocess(str(raw), str(tmp_path / "sharded"), stages=2, eval_days=1, rows_per_shard=300)
    assert stats["shards"] == 3 and sharded["shards"] > 3 * 4
    assert {k: v for k, v in sharded.items() if k != "shards"} == {k: v for k, v in stats.items() if k != "shards"}
    assert published_outputs(tmp_path / "sharded") == published_outputs(out)
    assert not (tmp_path / "sharded" / ".records").exists() and not (out / ".records").exists()


@pytest.mark.parametrize("lose, message", [
    ("shard", r"the runner lost work, nothing is published: (\d+) of \d+ planned shards were joined; "
              r"\d+ all_stage rows were read of the \d+ the files hold"),
    ("records", r"the runner lost work, nothing is published: \d+ of \d+ assembled train requests were written"),
])
def test_lost_work_is_refused(small_raw, tmp_path, monkeypatch, lose, message):
    """A runner that silently drops a shard or a records file (as Beam's multi-process
    DirectRunner was seen to drop input) fails the run instead of publishing a smaller dataset."""
    from tfcascade.beam import preprocess

    if lose == "shard":
        join = preprocess.JoinShard.process

        def process(self, shard, pools):
            if (shard.day, shard.index) != ("2024-01-13", 1):
                yield from join(self, shard, pools)

        monkeypatch.setattr(preprocess.JoinShard, "process", process)
    else:
        read = preprocess._read_records
        monkeypatch.setattr(preprocess, "_read_records",
                            lambda path: [] if "2024-01-13-00000" in path else read(path))
    with pytest.raises(RuntimeError, match=message):
        run_preprocess(str(small_raw), str(tmp_path / "out"), rows_per_shard=250)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
