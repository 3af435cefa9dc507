"""Tests of TARQ: residual quantization against brute force, the cached scoring path against
an explicit per-candidate computation, codebook maintenance, serialisation and errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade._keras import keras
from tfcascade.features import (
    HISTORY_FEATURES,
    HISTORY_LENGTH,
    HISTORY_TO_ITEM,
    ITEM_FEATURES,
    USER_FEATURES,
)
from tfcascade.layers.residual_quantizer import (
    ResidualQuantizer,
    codebook_utilisation,
    residual_encode,
)
from tfcascade.models.tarq import TARQ
from tfcascade.training.callbacks import CodebookMonitor

VOCAB = {"user_id": 20, "device_id": 5, "age": 6, "gender": 3, "province": 7, "video_id": 40,
         "author_id": 15, "category_level_one": 6, "category_level_two": 9, "upload_type": 4,
         "request_weekday": 8, "request_hour": 25, "request_minute": 61, "upload_weekday": 8, "upload_hour": 25,
         "upload_minute": 61}


def make_features(batch=3, n=5, seed=0, empty_history_row=None):
    rng = np.random.default_rng(seed)
    f = {name: tf.constant(rng.integers(1, VOCAB[name], batch), tf.int64) for name in USER_FEATURES}
    for name in ITEM_FEATURES:
        f[name] = tf.constant(rng.integers(1, VOCAB[name], (batch, n)), tf.int64)
    hist_len = rng.integers(0, HISTORY_LENGTH, batch)
    positions = np.arange(HISTORY_LENGTH)[None, :] < hist_len[:, None]
    if empty_history_row is not None:
        positions[empty_history_row] = False
    for name, item in HISTORY_TO_ITEM.items():
        f[name] = tf.constant(np.where(positions, rng.integers(1, VOCAB[item], (batch, HISTORY_LENGTH)), 0), tf.int64)
    return f


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.integers(1, 4))
def test_residual_encode_matches_greedy_brute_force(seed, levels):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 3))
    books = rng.normal(size=(levels, 5, 3))
    codes, quantized, residuals = residual_encode(tf.constant(x), tf.constant(books))
    r = x.copy()
    total = np.zeros_like(x)
    for level in range(levels):
        np.testing.assert_allclose(residuals[level].numpy(), r, atol=1e-10)
        want = np.argmin(((r[:, None, :] - books[level][None]) ** 2).sum(-1), axis=1)
        np.testing.assert_array_equal(codes[:, level].numpy(), want)
        total += books[level][want]
        r = r - books[level][want]
    np.testing.assert_allclose(quantized.numpy(), total, atol=1e-10)


def test_reconstruction_error_falls_with_more_levels():
    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    errors = []
    for levels in (1, 2, 3, 4):
        rq = ResidualQuantizer(num_levels=levels, codebook_size=16)
        errors.append(rq.fit_kmeans(x, iterations=8))
        # The reported error is the real reconstruction error of the encoder.
        recon = rq.decode(rq.encode(tf.constant(x))).numpy()
        assert errors[-1] == pytest.approx(np.mean(np.sum((x - recon) ** 2, 1)), rel=1e-4)
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.7 * np.mean(np.sum(x ** 2, 1))


def test_straight_through_gradient_and_losses():
    rq = ResidualQuantizer(num_levels=2, codebook_size=4)
    x = tf.Variable(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    weights = tf.constant(np.arange(18, dtype=np.float32).reshape(6, 3))
    with tf.GradientTape(persistent=True) as tape:
        quantized, codes = rq(x, training=True)
        out = tf.reduce_sum(quantized * weights)
        aux = tf.add_n(rq.losses)
    # Forward: the quantized vector; backward: identity to x (straight-through).
    np.testing.assert_allclose(quantized.numpy(), rq.decode(codes).numpy(), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(out, x).numpy(), weights.numpy())
    assert codes.shape == (6, 2) and len(rq.losses) == 1
    assert tape.gradient(aux, rq.codebooks) is not None and tape.gradient(aux, x) is not None
    assert not rq(x, training=False)[1].shape != (6, 2)


def test_dead_codes_are_reset_from_recent_residuals_and_utilisation():
    rq = ResidualQuantizer(num_levels=2, codebook_size=8, usage_decay=0.0, sample_size=16)
    x = tf.constant(np.random.default_rng(2).normal(size=(32, 4)).astype(np.float32))
    _, codes = rq(x, training=True)  # decay 0: usage = this batch's share
    used = [set(codes[:, level].numpy().tolist()) for level in range(2)]
    np.testing.assert_allclose(rq.utilisation(), [len(u) / 8 for u in used])
    before = rq.codebooks.numpy()
    dead = sum(8 - len(u) for u in used)
    assert rq.reset_dead_codes(seed=0) == dead
    after, recent = rq.codebooks.numpy(), rq.recent.numpy()
    for level in range(2):
        for code in range(8):
            if code in used[level]:
                np.testing.assert_array_equal(after[level, code], before[level, code])
            else:  # re-seeded with one of the level's recent residuals
                assert np.any(np.all(np.isclose(recent[level], after[level, code]), axis=1))
    np.testing.assert_allclose(rq.utilisation(), [1.0, 1.0])


def test_codebook_utilisation_counts_used_codes():
    codes = np.array([[0, 1], [0, 2], [3, 2]])
    np.testing.assert_allclose(codebook_utilisation(codes, 4), [0.5, 0.5])


@pytest.mark.parametrize("scorer", ["dot", "mlp"])
def test_scores_equal_explicit_per_candidate_computation(scorer):
    tf.random.set_seed(0)
    model = TARQ(VOCAB, dim=6, num_levels=3, codebook_size=5, scorer=scorer, mlp_units=(7,))
    features = make_features(empty_history_row=1)
    scores = model(features).numpy()
    assert scores.shape == (3, 5) and np.all(np.isfinite(scores))
    books = model.quantizer.codebooks.numpy()
    d = model.dim
    for b in range(3):
        one = {k: v[b:b + 1] for k, v in features.items()}
        user, _ = model.user_cache(one)
        hist = np.concatenate([model.embeddings[HISTORY_TO_ITEM[name]](one[name]).numpy()
                               for name in HISTORY_FEATURES], -1)
        hist = model.history_tower(hist).numpy()[0]
        valid = one["hist_video_id"].numpy()[0] != 0
        keys, values = model.key(hist).numpy(), model.value(hist).numpy()
        for i in range(5):
            item = {k: v[:, i:i + 1] for k, v in one.items() if k in ITEM_FEATURES}
            t = model.item_vectors(item).numpy()[0, 0]
            # Greedy residual codes of this candidate, then attention with each code as query.
            interest, r = np.zeros(d), t.copy()
            for level in range(3):
                c = np.argmin(((r[None] - books[level]) ** 2).sum(-1))
                r = r - books[level][c]
                if valid.any():
                    q = model.query(books[level][c][None]).numpy()[0]
                    logits = keys[valid] @ q / np.sqrt(d)
                    w = np.exp(logits - logits.max())
                    interest += (w / w.sum()) @ values[valid]
            want = model.combine(user, tf.constant(interest[None, None], tf.float32),
                                 tf.constant(t[None, None])).numpy()[0, 0]
            if scorer == "dot":
                assert want == pytest.approx(float((user.numpy()[0] + interest) @ t), rel=1e-4, abs=1e-6)
            assert scores[b, i] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_serving_path_with_precomputed_codes_matches_call():
    tf.random.set_seed(1)
    model = TARQ(VOCAB, dim=6, num_levels=2, codebook_size=4)
    features = make_features(batch=2, n=7, seed=3)
    items = model.item_vectors(features)
    codes = model.quantizer.encode(items)  # precomputed once per item offline
    user, cache = model.user_cache(features)
    assert cache.shape == (2, 2, 4, 6)
    np.testing.assert_allclose(model.score_codes(user, cache, items, codes).numpy(),
                               model(features).numpy(), rtol=1e-5, atol=1e-6)


def test_fit_reduces_loss_and_monitor_reports_utilisation():
    tf.random.set_seed(2)
    model = TARQ(VOCAB, dim=8, num_levels=2, codebook_size=8)
    features = make_features(batch=64, n=4, seed=5)
    # Candidates 0, 1 are videos from the user's history (label 1), 2, 3 are not (label 0):
    # only attention over the history can tell them apart.
    rng = np.random.default_rng(6)
    hist = np.zeros((64, HISTORY_LENGTH), np.int64)
    hist[:, :10] = rng.integers(1, 40, (64, 10))
    videos = np.zeros((64, 4), np.int64)
    for b in range(64):
        videos[b, :2] = hist[b, :2]
        videos[b, 2:] = rng.choice(np.setdiff1d(np.arange(1, 40), hist[b]), 2, replace=False)
    features["hist_video_id"] = tf.constant(hist)
    for name in HISTORY_FEATURES[1:]:  # the same author, categories and upload type for every entry
        features[name] = tf.constant(np.where(hist > 0, 1, 0))
    features["video_id"] = tf.constant(videos)
    labels = np.tile(np.array([[1, 1, 0, 0]], np.float32), (64, 1))
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    before = float(bce(labels, model(features)))
    monitor = CodebookMonitor(model.quantizer, every=5)
    history = model.fit(features, labels, batch_size=16, epochs=8, verbose=0, callbacks=[monitor])
    after = float(bce(labels, model(features)))
    assert after < 0.8 * before, (before, after)  # the click loss, without the RQ loss
    assert "tarq/utilisation_level0" in history.history
    assert 0.0 < history.history["tarq/utilisation_level1"][-1] <= 1.0


def test_serialisation_round_trip(tmp_path):
    tf.random.set_seed(4)
    model = TARQ(VOCAB, dim=6, num_levels=2, codebook_size=4, scorer="dot")
    features = make_features()
    want = model(features).numpy()
    path = str(tmp_path / "tarq.weights.h5")
    model.save_weights(path)
    clone = TARQ.from_config(model.get_config())
    clone(features)
    clone.load_weights(path)
    np.testing.assert_allclose(clone(features).numpy(), want, rtol=1e-6)
    rq = ResidualQuantizer(num_levels=2, codebook_size=3, commitment=0.5)
    assert ResidualQuantizer.from_config(rq.get_config()).get_config() == rq.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"vocab_sizes is missing \['user_id'\]"):
        TARQ({k: v for k, v in VOCAB.items() if k != "user_id"})
    with pytest.raises(ValueError, match="scorer must be one of"):
        TARQ(VOCAB, scorer="din")
    with pytest.raises(ValueError, match="vocab_sizes must be integers >= 2"):
        TARQ({**VOCAB, "age": 1})
    with pytest.raises(ValueError, match="codebook_size must be a positive integer, got codebook_size=0"):
        ResidualQuantizer(codebook_size=0)
    with pytest.raises(ValueError, match=r"N >= codebook_size=8"):
        ResidualQuantizer(codebook_size=8).fit_kmeans(np.zeros((4, 2)))
    model = TARQ(VOCAB, dim=4, num_levels=1, codebook_size=2)
    features = make_features()
    with pytest.raises(ValueError, match=r"features is missing \['hist_author_id'\]"):
        model({k: v for k, v in features.items() if k != "hist_author_id"})
    with pytest.raises(ValueError, match=r"item features must be \[B, n\]"):
        model({**features, "video_id": features["video_id"][:, 0]})
    with pytest.raises(ValueError, match="every must be > 0"):
        CodebookMonitor(ResidualQuantizer(), every=0)


def test_tarq_as_pre_ranking_stage_of_cascade_model():
    cascade = pytest.importorskip("tfcascade.models.cascade")
    from tfcascade.models.din import DIN
    from tfcascade.models.dssm import DSSM

    features = make_features(batch=8, n=40, seed=1)
    graded = np.concatenate([30 - np.arange(10), [7] * 10, [6] * 10, [5] * 10]).astype(np.float32)
    features["label"] = tf.constant(np.tile(graded, (8, 1)))
    features["mask"] = tf.ones((8, 40))
    tarq = TARQ(VOCAB, name="prerank_tarq")
    model = cascade.CascadeModel([DSSM(VOCAB, 8), tarq, DIN(VOCAB, 8)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensor_slices(features).batch(4), epochs=1, verbose=0,
                        callbacks=[CodebookMonitor(tarq.quantizer, every=1)])
    assert model(features).shape == (8, 3, 40)
    # The RQ loss reaches the cascade's objective (TFRS adds model.losses as regularization).
    assert history.history["regularization_loss"][0] > 0
    assert np.isfinite(history.history["total_loss"][0])
