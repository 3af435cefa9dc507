"""In-batch sampled negatives: every appended item is a valid item of another request."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.data import make_dataset
from tfcascade.data.negatives import append_sampled_negatives
from tfcascade.features import ITEM_FEATURES, LIST_FEATURES, STAGE_CODES


def _batch(b: int, n: int, rng: np.random.Generator, empty_rows=()) -> dict:
    """Item ids encode (row, column) so every appended item can be traced back."""
    ids = (np.arange(b)[:, None] * 1000 + np.arange(n)[None, :] + 1).astype(np.int64)
    mask = (rng.random((b, n)) < 0.7).astype(np.float32)
    mask[:, 0] = 1.0
    for r in empty_rows:
        mask[r] = 0.0
    batch = {name: tf.constant(ids * (i + 1)) for i, name in enumerate(ITEM_FEATURES)}
    batch.update(label=tf.constant(np.where(mask > 0, 5.0, -1.0).astype(np.float32)),
                 stage=tf.constant(np.where(mask > 0, 2, -1).astype(np.int64)),
                 rank_index=tf.constant(np.full((b, n), -1, np.int64)), mask=tf.constant(mask),
                 user_id=tf.constant(np.arange(b, dtype=np.int64)))
    return batch


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), n=st.integers(1, 7), m=st.integers(1, 9), seed=st.integers(0, 2**30))
def test_appended_items_are_valid_items_of_other_requests(b, n, m, seed):
    rng = np.random.default_rng(seed)
    batch = _batch(b, n, rng, empty_rows=[b - 1] if b > 2 else ())
    out = append_sampled_negatives(batch, m, tf.constant([seed, 1]))
    mask = batch["mask"].numpy()
    assert out["user_id"] is batch["user_id"]
    for name in LIST_FEATURES:
        assert out[name].shape == (b, n + m)
        np.testing.assert_array_equal(out[name].numpy()[:, :n], batch[name].numpy())
    extra_mask = out["mask"].numpy()[:, n:]
    ids = out["video_id"].numpy()[:, n:]
    for r in range(b):
        for j in range(m):
            src_row, src_col = divmod(int(ids[r, j]) - 1, 1000)
            assert mask[src_row, src_col] > 0  # always a valid item of the batch
            if extra_mask[r, j] > 0:
                assert src_row != r  # ids are unique per (row, column): own items are never kept
                for i, name in enumerate(ITEM_FEATURES):  # all features of one and the same item
                    assert out[name].numpy()[r, n + j] == ids[r, j] * (i + 1)
                assert out["label"].numpy()[r, n + j] == 0.0
                assert out["stage"].numpy()[r, n + j] == STAGE_CODES["sampled_neg"]
                assert out["rank_index"].numpy()[r, n + j] == -1
            else:  # a draw of the request's own item: padding
                assert src_row == r
                assert out["label"].numpy()[r, n + j] == -1.0 and out["stage"].numpy()[r, n + j] == -1


def test_draws_are_uniform_over_distinct_items_and_skip_own_items():
    b, n, m = 4, 3, 6000
    batch = _batch(b, n, np.random.default_rng(0))
    batch["mask"] = tf.ones([b, n])
    ids = batch["video_id"].numpy().copy()
    ids[1:, 0] = 7  # one popular item in rows 1, 2, 3: drawn as often as any other distinct item
    batch["video_id"] = tf.constant(ids)
    out = append_sampled_negatives(batch, m, tf.constant([3, 4]))
    drawn = out["video_id"].numpy()[0, n:]
    kept = out["mask"].numpy()[0, n:] > 0
    distinct = np.unique(ids)  # 12 slots, 10 distinct ids
    counts = np.array([(drawn == d).sum() for d in distinct])
    np.testing.assert_allclose(counts / m, 1 / len(distinct), atol=0.02)  # 6000 draws: std ≈ 0.004
    assert not np.isin(drawn[kept], ids[0]).any() and np.isin(drawn[~kept], ids[0]).all()
    again = append_sampled_negatives(batch, m, tf.constant([3, 4]))
    np.testing.assert_array_equal(again["video_id"].numpy(), out["video_id"].numpy())
    lonely = append_sampled_negatives({k: v[:1] for k, v in batch.items()}, 5, tf.constant([0, 0]))
    assert lonely["mask"].numpy()[0, n:].sum() == 0  # a batch of one request has only its own items


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), n=st.integers(1, 7), m=st.integers(1, 30), seed=st.integers(0, 2**30))
def test_slot_draws_are_distinct_valid_slots_of_other_requests(b, n, m, seed):
    rng = np.random.default_rng(seed)
    batch = _batch(b, n, rng, empty_rows=[b - 1] if b > 2 else ())
    out = append_sampled_negatives(batch, m, tf.constant([seed, 2]), draw="slots")
    mask = batch["mask"].numpy()
    extra_mask = out["mask"].numpy()[:, n:]
    ids = out["video_id"].numpy()[:, n:]
    for r in range(b):
        others = int(mask.sum() - mask[r].sum())
        assert extra_mask[r].sum() == min(m, others)  # without replacement: as many as there are slots
        drawn = ids[r][extra_mask[r] > 0]
        assert len(set(drawn.tolist())) == len(drawn)  # ids are unique per slot: no slot twice
        for vid in drawn:
            src_row, src_col = divmod(int(vid) - 1, 1000)
            assert src_row != r and mask[src_row, src_col] > 0
        assert (out["label"].numpy()[r, n:] == np.where(extra_mask[r] > 0, 0.0, -1.0)).all()


def test_slot_draws_favour_items_logged_often_and_keep_own_items_from_other_slots():
    b, n, m = 200, 3, 100
    batch = _batch(b, n, np.random.default_rng(0))
    batch["mask"] = tf.ones([b, n])
    ids = batch["video_id"].numpy().copy()
    ids[:, 0] = 7  # logged by every request: a third of every request's other slots
    batch["video_id"] = tf.constant(ids)
    draws = append_sampled_negatives(batch, m, tf.constant([5, 0]), draw="slots")["video_id"].numpy()[:, n:]
    np.testing.assert_allclose((draws == 7).mean(), 1 / 3, atol=0.01)  # 20,000 draws: std ≈ 0.003
    assert (draws == 7).any(axis=1).all()  # the request's own item, drawn from other requests' slots
    with pytest.raises(ValueError, match="draw must be one of"):
        append_sampled_negatives(batch, m, tf.constant([0, 0]), draw="rows")


def test_bad_m(tiny_data):
    with pytest.raises(ValueError, match="m must be > 0, got m=0"):
        append_sampled_negatives(_batch(2, 2, np.random.default_rng(0)), 0, tf.constant([0, 0]))
    with pytest.raises(ValueError, match="sampled_negatives must be >= 0, got sampled_negatives=-1"):
        make_dataset(str(tiny_data), "train", 8, sampled_negatives=-1)
    with pytest.raises(ValueError, match="negative_draw must be one of"):
        make_dataset(str(tiny_data), "train", 8, sampled_negatives=4, negative_draw="rows")


def test_make_dataset_appends_negatives_to_training_lists(tiny_data):
    plain = next(iter(make_dataset(str(tiny_data), "train", 16, shuffle=False)))
    extended = next(iter(make_dataset(str(tiny_data), "train", 16, shuffle=False, seed=1, sampled_negatives=24)))
    n = plain["label"].shape[1]
    assert extended["label"].shape == (16, n + 24)
    np.testing.assert_array_equal(extended["video_id"].numpy()[:, :n], plain["video_id"].numpy())
    kept = extended["mask"].numpy()[:, n:] > 0
    stage = extended["stage"].numpy()[:, n:]
    assert (stage[kept] == STAGE_CODES["sampled_neg"]).all() and (stage[~kept] == -1).all()
    assert kept.mean() > 0.8  # only draws of a request's own items are dropped
    video = extended["video_id"].numpy()
    for r in range(16):
        assert not np.isin(video[r, n:][kept[r]], video[r, :n]).any()
