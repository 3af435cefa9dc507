"""Request shards: a fixed hash of the request id, and reading one shard of an all_stage file."""

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.data import simulate
from tfcascade.data.schema import COLUMNS, SchemaError
from tfcascade.data.shards import all_stage_rows, read_all_stage, request_shards

DAY = "2024-01-13"


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), st.integers(1, 9))
def test_shards_are_in_range_and_the_same_for_ints_floats_and_objects(ids, num_shards):
    shards = request_shards(np.asarray(ids, np.int64), num_shards)
    assert shards.dtype == np.int64 and shards.shape == (len(ids),)
    assert ((shards >= 0) & (shards < num_shards)).all()
    np.testing.assert_array_equal(request_shards(np.asarray(ids, object), num_shards), shards)
    exact = [i for i in ids if abs(i) < 2**53]  # ids a float64 holds exactly
    np.testing.assert_array_equal(request_shards(np.asarray(exact, np.float64), num_shards),
                                  request_shards(np.asarray(exact, np.int64), num_shards))


def test_ids_that_are_not_int64_integers_go_to_shard_0():
    values = np.array([np.nan, np.inf, -np.inf, 2.5, 1e30], np.float64)
    np.testing.assert_array_equal(request_shards(values, 7), 0)
    np.testing.assert_array_equal(request_shards(np.array(["12", None, True, 3.5, 2**63, -(2**63) - 1], object), 7), 0)


def test_shards_are_balanced_and_fixed():
    shards = request_shards(np.arange(100_000), 8)
    counts = np.bincount(shards, minlength=8)
    assert counts.min() > 0.95 * 100_000 / 8 and counts.max() < 1.05 * 100_000 / 8
    # A fixed function (not Python's salted hash): these values must never change, or two
    # runs of one dataset would shard it differently.
    # splitmix64 (values checked against a pure-Python splitmix64).
    np.testing.assert_array_equal(request_shards(np.arange(10), 5), [0, 0, 0, 3, 3, 3, 2, 2, 2, 3])
    np.testing.assert_array_equal(request_shards(np.array([123456789, 2**62, -7]), 5), [2, 0, 2])
    with pytest.raises(ValueError, match="num_shards must be >= 1, got num_shards=0"):
        request_shards([1], 0)


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    simulate(raw, "tiny", seed=3, days=1, requests_per_day=30)
    path = raw / "all_stage" / f"{DAY}.feather"
    frame = pd.read_feather(path).astype({"request_id": float})
    frame.loc[[0, 5], "request_id"] = [np.nan, np.inf]
    frame.to_feather(path, chunksize=100)  # several record batches
    return path, frame


@settings(max_examples=6, deadline=None)
@given(num_shards=st.integers(1, 6), given_as=st.sampled_from(["path", "bytes", "file"]))
def test_the_shards_of_a_file_partition_it_in_file_order(day_file, num_shards, given_as):
    path, frame = day_file
    data = {"path": str(path), "bytes": path.read_bytes(), "file": io.BytesIO(path.read_bytes())}[given_as]
    assert all_stage_rows(data, str(path)) == len(frame)
    parts = [read_all_stage(data, str(path), k, num_shards) for k in range(num_shards)]
    whole = read_all_stage(data, str(path))
    pd.testing.assert_frame_equal(whole, frame[list(COLUMNS)])
    for k, part in enumerate(parts):
        assert list(part.columns) == list(COLUMNS)
        np.testing.assert_array_equal(request_shards(part.request_id.to_numpy(), num_shards), k)
    merged = pd.concat(parts).sort_values(["request_id", "video_id"], na_position="first", kind="stable")
    expected = whole.sort_values(["request_id", "video_id"], na_position="first", kind="stable")
    np.testing.assert_array_equal(merged.to_numpy(), expected.to_numpy())
    # Rows keep their file order within a shard.
    for k, part in enumerate(parts):
        mine = whole[request_shards(whole.request_id.to_numpy(), num_shards) == k].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.reset_index(drop=True), mine)


def test_unreadable_or_incomplete_files_are_named(tmp_path, day_file):
    path, frame = day_file
    with pytest.raises(SchemaError, match="bad.feather: cannot be read as a feather file"):
        all_stage_rows(b"not a feather file", "bad.feather")
    with pytest.raises(SchemaError, match="bad.feather: cannot be read as a feather file"):
        read_all_stage(b"not a feather file", "bad.feather")
    buffer = io.BytesIO()
    frame.drop(columns=["video_id"]).to_feather(buffer)
    with pytest.raises(SchemaError, match=r"x.feather: missing columns \['video_id'\]"):
        read_all_stage(buffer.getvalue(), "x.feather", 1, 3)
    with pytest.raises(ValueError, match=r"shard must be in \[0, 3\), got shard=3"):
        read_all_stage(str(path), str(path), 3, 3)
