"""CascadeModel: shapes, the real cascade vs brute force, save/reload, errors."""

import numpy as np
import pytest
import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.models import DIN, DSSM, CascadeModel, build_cascade
from tfcascade.training import load_model

VOCAB = {f: 13 for f in F.USER_FEATURES + F.ITEM_FEATURES}


def _batch(b=3, n=12, seed=0):
    rng = np.random.default_rng(seed)
    feats = {f: tf.constant(rng.integers(0, 13, b), tf.int64) for f in F.USER_FEATURES}
    feats.update({f: tf.constant(rng.integers(0, 13, (b, F.HISTORY_LENGTH)), tf.int64) for f in F.HISTORY_FEATURES})
    feats.update({f: tf.constant(rng.integers(1, 13, (b, n)), tf.int64) for f in F.ITEM_FEATURES})
    label = rng.permutation(np.tile(np.arange(n, dtype=np.float32), (b, 1)).T).T
    mask = np.ones((b, n), np.float32)
    mask[0, -3:] = 0
    label[mask == 0] = -1
    feats["label"], feats["mask"] = tf.constant(label), tf.constant(mask)
    return feats


@pytest.mark.parametrize("stages", [2, 3])
def test_select_equals_numpy_brute_force_cascade(stages):
    model = build_cascade(VOCAB, stages=stages, loss="bce", embedding_dim=4, qs=(8, 6, 4)[-stages:] if stages == 3 else (8, 5), k=3, seed=1)
    batch = _batch(n=12)
    scores = [s.numpy() for s in model.stage_scores(batch)]
    idx, top = model.select(batch)
    mask = batch["mask"].numpy() > 0
    for b in range(3):
        kept = np.flatnonzero(mask[b])
        for s, q in zip(scores, model.qs):
            kept = sorted(kept, key=lambda i, s=s: (-s[b, i], i))[:q]
        want = sorted(kept, key=lambda i: (-scores[-1][b, i], i))[:3]
        np.testing.assert_array_equal(idx.numpy()[b], want)
        np.testing.assert_allclose(top.numpy()[b], scores[-1][b, want], rtol=1e-6)


def test_compute_loss_and_a_training_step_update_metrics():
    model = build_cascade(VOCAB, stages=2, loss="lcron", embedding_dim=4, qs=(8, 5), k=3, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensors(_batch()), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert "joint_recall" in history.history and "ranking_ndcg" in history.history


def test_bad_configurations():
    with pytest.raises(ValueError, match="unknown loss name='nope'"):
        build_cascade(VOCAB, stages=2, loss="nope")
    with pytest.raises(ValueError, match="stages must be 2 or 3"):
        build_cascade(VOCAB, stages=4)
    with pytest.raises(ValueError, match="qs needs one value per stage"):
        build_cascade(VOCAB, stages=2, qs=(30, 20, 10))
    from tfcascade.losses import get

    with pytest.raises(ValueError, match="loss is for 3 stages"):
        CascadeModel([DSSM(VOCAB), DIN(VOCAB)], loss=get("bce", stages=3))
    with pytest.raises(ValueError, match="vocab_sizes lacks"):
        DSSM({"user_id": 3})
    model = build_cascade(VOCAB, stages=2, loss="bce", embedding_dim=4)
    batch = _batch()
    batch.pop("label")
    with pytest.raises(ValueError, match="'label'"):
        model.compute_loss(batch)


def test_save_and_reload_gives_identical_scores(tiny_model_dir, tiny_data):
    from tfcascade.data import make_dataset

    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=8, shuffle=False)))
    a = load_model(str(tiny_model_dir))
    b = load_model(str(tiny_model_dir))
    for x, y in zip(a.stage_scores(batch), b.stage_scores(batch)):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    fresh = build_cascade(a.config()["vocab_sizes"], stages=2, loss="dftopk", seed=123)
    assert not np.allclose(fresh.stage_scores(batch)[0].numpy(), a.stage_scores(batch)[0].numpy())
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tiny_data))
