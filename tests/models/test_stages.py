"""Stage models (DSSM, MLP pre-ranker, DIN): any list length, per-candidate scoring, serialisation."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade import features as F
from tfcascade.layers.feature_embeddings import FeatureEmbeddings
from tfcascade.layers.target_attention import TargetAttention
from tfcascade.models.din import DIN
from tfcascade.models.dssm import DSSM
from tfcascade.models.mlp import MLPPreranker

VOCAB = {f: 13 for f in F.USER_FEATURES + F.ITEM_FEATURES}


def _features(b=3, n=12, seed=0, history_len=F.HISTORY_LENGTH):
    rng = np.random.default_rng(seed)
    feats = {f: tf.constant(rng.integers(0, 13, b), tf.int64) for f in F.USER_FEATURES}
    hist = rng.integers(1, 13, (b, F.HISTORY_LENGTH))
    hist[:, history_len:] = 0
    feats.update({f: tf.constant(hist, tf.int64) for f in F.HISTORY_FEATURES})
    feats.update({f: tf.constant(rng.integers(1, 13, (b, n)), tf.int64) for f in F.ITEM_FEATURES})
    return feats


@pytest.mark.parametrize("cls", [DSSM, MLPPreranker, DIN])
def test_stage_models_score_any_list_length_and_serialise(cls):
    model = cls(VOCAB, embedding_dim=4)
    for n in (1, 5, 12):
        assert model(_features(n=n)).shape == (3, n)
    clone = cls.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("cls", [DSSM, MLPPreranker, DIN])
@settings(max_examples=5, deadline=None)
@given(perm_seed=st.integers(0, 1000))
def test_scores_are_per_candidate(cls, perm_seed):
    """Permuting or sub-setting the candidates permutes / sub-sets the scores (no list coupling)."""
    model = _MODELS.setdefault(cls, cls(VOCAB, embedding_dim=4))
    feats = _features(n=9)
    perm = np.random.default_rng(perm_seed).permutation(9)[:5]
    sub = {f: (tf.gather(v, perm, axis=1) if f in F.ITEM_FEATURES else v) for f, v in feats.items()}
    np.testing.assert_allclose(model(sub).numpy(), model(feats).numpy()[:, perm], rtol=1e-5, atol=1e-6)


_MODELS: dict = {}


def test_dssm_is_a_dot_product_of_towers():
    model = DSSM(VOCAB, embedding_dim=4)
    batch = _features()
    want = np.einsum("bd,bnd->bn", model.user_vector(batch).numpy(), model.item_vectors(batch).numpy())
    np.testing.assert_allclose(model(batch).numpy(), want, rtol=1e-5, atol=1e-6)
    assert model.user_vector(batch).shape == (3, 32)


def test_history_shares_item_tables_and_padding_is_ignored():
    emb = FeatureEmbeddings(VOCAB, dim=4)
    feats = _features(b=2, n=3, history_len=7)
    hist, mask = emb.history(feats)
    np.testing.assert_array_equal(mask.numpy(), np.repeat([[1] * 7 + [0] * (F.HISTORY_LENGTH - 7)], 2, 0))
    video_table = emb.tables["video_id"].embeddings.numpy()
    np.testing.assert_allclose(hist.numpy()[:, :, :4], video_table[feats["hist_video_id"].numpy()])
    want = (hist.numpy()[:, :7]).mean(1)
    np.testing.assert_allclose(emb.pooled_history(feats).numpy(), want, rtol=1e-5, atol=1e-6)


def test_din_ignores_padded_history_entries():
    model = DIN(VOCAB, embedding_dim=4)
    feats = _features(history_len=10)
    changed = dict(feats)
    for f in F.HISTORY_FEATURES:  # padding id 0 everywhere past position 10 regardless of the values before it
        changed[f] = tf.concat([feats[f][:, :10], tf.zeros_like(feats[f][:, 10:])], 1)
    np.testing.assert_allclose(model(changed).numpy(), model(feats).numpy(), rtol=1e-6)
    other = dict(feats)
    other["hist_video_id"] = tf.concat([feats["hist_video_id"][:, :9], 12 - feats["hist_video_id"][:, 9:10],
                                        feats["hist_video_id"][:, 10:]], 1)
    assert not np.allclose(model(other).numpy(), model(feats).numpy())


def test_target_attention_equals_explicit_per_candidate_computation():
    layer = TargetAttention(hidden=5)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 3, 4)).astype(np.float32)
    h = rng.normal(size=(2, 6, 4)).astype(np.float32)
    m = np.array([[1, 1, 1, 0, 0, 0], [1] * 6], np.float32)
    out = layer(q, h, m).numpy()
    wq, bq = [v.numpy() for v in layer.q_proj.weights]
    wh = layer.h_proj.weights[0].numpy()
    wqh = layer.qh_proj.weights[0].numpy()
    wo, bo = [v.numpy() for v in layer.out.weights]
    for b in range(2):
        for c in range(3):
            acc = np.zeros(4)
            for j in range(6):
                a = np.maximum(q[b, c] @ wq + bq + h[b, j] @ wh + (q[b, c] * h[b, j]) @ wqh, 0) @ wo + bo
                acc += m[b, j] * a[0] * h[b, j]
            np.testing.assert_allclose(out[b, c], acc, rtol=1e-4, atol=1e-5)


def test_bad_embedding_config():
    with pytest.raises(ValueError, match="vocab_sizes lacks"):
        FeatureEmbeddings({"user_id": 3}, dim=4)
    with pytest.raises(ValueError, match="dim=0"):
        FeatureEmbeddings(VOCAB, dim=0)
