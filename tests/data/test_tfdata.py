"""tf.data input without Beam: dataset_from_records indexes ids and keeps every value."""

import numpy as np
import pytest

from tfcascade import features as F
from tfcascade.data import (
    dataset_from_records,
    load_metadata,
    make_dataset,
    read_requests,
    simulate,
)
from tfcascade.data.vocabulary import build_vocabularies


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("recflow_tfdata")
    simulate(out, "tiny", seed=3, days=1, requests_per_day=12)
    return list(read_requests(out, stages=2))


def test_records_round_trip_through_vocabularies(records):
    ds = dataset_from_records(records, batch_size=5)
    got = [b for b in ds]
    assert [int(b["mask"].shape[0]) for b in got] == [5, 5, 2]
    # Vocabularies built from the records: every real id gets an index in 1..len(vocab).
    vocab = {}
    for rec in records:
        for name in ("video_id", "author_id"):
            vocab.setdefault(name, set()).update(int(v) for v in rec[name][rec["mask"] > 0])
            # History features share the item vocabulary (features.HISTORY_TO_ITEM).
            vocab[name].update(int(v) for v in rec["hist_" + name] if v >= 0)
    batch = got[0]
    for i in range(5):
        rec = records[i]
        np.testing.assert_array_equal(batch["label"][i].numpy(), rec["label"].astype(np.float32))
        np.testing.assert_array_equal(batch["stage"][i].numpy(), rec["stage"])
        np.testing.assert_array_equal(batch["mask"][i].numpy(), rec["mask"])
        idx = batch["video_id"][i].numpy()
        assert idx.shape == (sum(F.TWO_STAGE_LAYOUT.values()),)
        assert (idx[rec["mask"] > 0] >= 1).all() and idx.max() <= len(vocab["video_id"])
        # Same raw id ↔ same index, different raw ids ↔ different indices.
        raw = rec["video_id"][rec["mask"] > 0]
        pairs = set(zip(raw.tolist(), idx[rec["mask"] > 0].tolist()))
        assert len({r for r, _ in pairs}) == len(pairs) == len({j for _, j in pairs})


def test_explicit_vocabulary_maps_unknown_ids_to_zero(records):
    known = sorted({int(v) for v in records[0]["video_id"][records[0]["mask"] > 0]})[:3]
    vocab = {**build_vocabularies(records), "video_id": known}
    batch = next(iter(dataset_from_records(records[:1], vocabularies=vocab, batch_size=1)))
    raw = records[0]["video_id"]
    want = np.array([known.index(int(v)) + 1 if int(v) in known else 0 for v in raw])
    np.testing.assert_array_equal(batch["video_id"][0].numpy(), want)


def test_bad_arguments(tmp_path, records):
    with pytest.raises(ValueError, match="vocabularies lacks features"):
        dataset_from_records(records[:1], vocabularies={"video_id": [1]})
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        load_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match="split='train'"):
        make_dataset(str(tmp_path), "train")
    with pytest.raises(ValueError, match="batch_size=0"):
        make_dataset(str(tmp_path), batch_size=0)


def test_reader_seed_changes_order_not_content(tmp_path):
    simulate(tmp_path, "tiny", seed=3, days=1, requests_per_day=4)
    a = list(read_requests(tmp_path, seed=0))
    b = list(read_requests(tmp_path, seed=1))
    again = list(read_requests(tmp_path, seed=1))
    assert any(not np.array_equal(x["video_id"], y["video_id"]) for x, y in zip(a, b))
    for x, y, z in zip(a, b, again):
        np.testing.assert_array_equal(y["video_id"], z["video_id"])
        assert sorted(zip(x["video_id"], x["label"])) == sorted(zip(y["video_id"], y["label"]))
