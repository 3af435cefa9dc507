"""CascadeModel: shapes, the real cascade vs brute force, save/reload, get_config / from_config,
the stages' callbacks, errors."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.models import DIN, DSSM, TARQ, CascadeModel, CascadeSpec, build_cascade
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
    spec = CascadeSpec.default(stages, qs=(8, 6, 4) if stages == 3 else (8, 5), k=3)
    model = build_cascade(VOCAB, spec, loss="bce", embedding_dim=4, seed=1)
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
    model = build_cascade(VOCAB, CascadeSpec.default(2, qs=(8, 5), k=3), loss="lcron", embedding_dim=4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensors(_batch()), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert "joint_recall" in history.history and "ranking_ndcg" in history.history


def test_bad_configurations():
    with pytest.raises(ValueError, match="unknown loss name='nope'"):
        build_cascade(VOCAB, stages=2, loss="nope")
    with pytest.raises(ValueError, match="stages must be 2 or 3"):
        build_cascade(VOCAB, stages=4)
    with pytest.raises(ValueError, match="stages=3 contradicts the spec's 2 stages"):
        build_cascade(VOCAB, CascadeSpec.default(2), stages=3)
    with pytest.raises(TypeError, match="spec must be a CascadeSpec or its config dict, got spec=2"):
        build_cascade(VOCAB, 2)
    with pytest.raises(ValueError, match=r"spec.stage_kinds\[1\]='mlp' but stage 1 is a DIN \(kind 'din'\)"):
        CascadeModel([DSSM(VOCAB), DIN(VOCAB)], CascadeSpec.default(2, stage_kinds=("dssm", "mlp")))
    with pytest.raises(ValueError, match="spec has 3 stages but 2 stage models were given"):
        CascadeModel([DSSM(VOCAB), DIN(VOCAB)], CascadeSpec.default(3))
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
    fresh = build_cascade(a.get_config()["vocab_sizes"], stages=2, loss="dftopk", seed=123)
    assert not np.allclose(fresh.stage_scores(batch)[0].numpy(), a.stage_scores(batch)[0].numpy())
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tiny_data))


def _corpus_as_list(batch, corpus):
    """The whole corpus as every request's candidate list (what recommend must equal)."""
    b = int(batch["user_id"].shape[0])
    feats = {f: batch[f] for f in F.USER_FEATURES + F.HISTORY_FEATURES}
    feats.update({f: tf.tile(tf.constant(corpus[f], tf.int64)[None], [b, 1]) for f in F.ITEM_FEATURES})
    return feats


class _TiedScores(keras.Model):
    """A stage scoring ``feature mod m``: exact float scores, so ties are ties on every path.

    (A trained stage's scores of two identical items can differ in the last bit with their
    position in the batch, so ties are tested with exact scores.)
    """

    def __init__(self, feature, modulo):
        super().__init__()
        self.feature, self.modulo = feature, modulo

    def call(self, features, training=False):
        return tf.cast(features[self.feature] % self.modulo, tf.float32)


@pytest.mark.parametrize("stages", [2, 3])
def test_select_on_survivors_equals_whole_list_cascade(stages):
    from tfcascade.ops.cascade_select import cascade_select

    qs = (8, 6, 4) if stages == 3 else (8, 5)
    model = build_cascade(VOCAB, CascadeSpec.default(stages, qs=qs, k=4), loss="bce", embedding_dim=4, seed=3)
    batch = _batch(n=12, seed=2)
    _, want_idx, want_val = cascade_select(model.stage_scores(batch), qs, batch["mask"])
    idx, val = model.select(batch)
    np.testing.assert_array_equal(idx.numpy(), want_idx.numpy()[:, :4])
    np.testing.assert_allclose(val.numpy(), want_val.numpy()[:, :4], rtol=1e-5)
    # Fewer candidates than k, and none at all: padded with -1 / -inf.
    for n in (2, 0):
        short = {f: (v[:, :n] if f in F.ITEM_FEATURES + ("mask", "label") else v) for f, v in batch.items()}
        idx, val = model.select(short)
        assert idx.shape == (3, 4) and np.all(idx.numpy()[:, n:] == -1) and np.all(np.isneginf(val.numpy()[:, n:]))
        if n:
            assert np.all(np.sort(idx.numpy()[1:, :n], 1) == np.arange(n))
    for bad in (0, qs[-1] + 1):
        with pytest.raises(ValueError, match=rf"k must be in 1..{qs[-1]} \(the last stage's q\), got k={bad}"):
            model.select(batch, k=bad)


@pytest.mark.parametrize("qs", [(8, 5), (9, 6, 4), (12, 12, 12)])
def test_select_breaks_ties_as_the_whole_list_cascade(qs):
    from tfcascade.ops.cascade_select import cascade_select

    kinds = [("video_id", 3), ("author_id", 2), ("upload_type", 4)][: len(qs)]
    model = CascadeModel([_TiedScores(f, m) for f, m in kinds], CascadeSpec.default(len(qs), qs=qs, k=4), loss="bce")
    batch = _batch(n=12, seed=7)
    _, want_idx, want_val = cascade_select(model.stage_scores(batch), qs, batch["mask"])
    idx, val = model.select(batch)
    np.testing.assert_array_equal(idx.numpy(), want_idx.numpy()[:, :4])
    np.testing.assert_array_equal(val.numpy(), want_val.numpy()[:, :4])


@pytest.mark.parametrize("stages", [2, 3])
def test_recommend_equals_the_cascade_over_the_whole_corpus(stages):
    qs = (8, 6, 4) if stages == 3 else (8, 5)
    model = build_cascade(VOCAB, CascadeSpec.default(stages, qs=qs, k=4), loss="bce", embedding_dim=4, seed=4)
    batch = _batch(n=1, seed=5)
    rng = np.random.default_rng(0)
    corpus = {f: rng.integers(1, 13, 23) for f in F.ITEM_FEATURES}
    corpus["video_id"] = np.arange(100, 123)  # keys; the model's indices wrap into the vocabulary
    indices = {**corpus, "video_id": corpus["video_id"] % 13}
    want, want_val = model.select(_corpus_as_list(batch, indices))
    for chunk in (5, 64):
        rows, val = model.recommend(batch, indices, chunk_size=chunk)
        np.testing.assert_array_equal(rows.numpy(), want.numpy())
        np.testing.assert_allclose(val.numpy(), want_val.numpy(), rtol=1e-5)
    vectors = model.corpus_vectors(indices)
    keys = tf.constant(corpus["video_id"], tf.int64)
    first = rows.numpy()[:, :2] + 100  # exclude each request's two best (by key), and a padding -1
    exclude = tf.constant(np.concatenate([first, -np.ones((3, 1), np.int64)], 1))
    rows_ex, _ = model.recommend(batch, indices, vectors, corpus_keys=keys, exclude=exclude)
    masked = _corpus_as_list(batch, indices)
    masked["mask"] = tf.constant(np.stack([~np.isin(corpus["video_id"], r) for r in first]), tf.float32)
    want_ex, _ = model.select(masked)
    np.testing.assert_array_equal(rows_ex.numpy(), want_ex.numpy())
    assert not any(np.isin(got, best).any() for got, best in zip(rows_ex.numpy(), rows.numpy()[:, :2]))
    tiny = {f: v[:3] for f, v in indices.items()}  # corpus smaller than k
    rows_small, val_small = model.recommend(batch, tiny)
    assert np.all(rows_small.numpy()[:, 3:] == -1) and np.all(np.isneginf(val_small.numpy()[:, 3:]))
    assert np.all(np.sort(rows_small.numpy()[:, :3], 1) == np.arange(3))
    with pytest.raises(ValueError, match="corpus is empty"):
        model.recommend(batch, {f: v[:0] for f, v in indices.items()})


def test_recommend_needs_a_two_tower_retrieval_stage():
    model = build_cascade(VOCAB, CascadeSpec.default(2, stage_kinds=("mlp", "din"), qs=(8, 5), k=3), loss="bce",
                          embedding_dim=4, seed=0)
    with pytest.raises(ValueError, match="needs a two-tower retrieval stage.*MLPPreranker"):
        model.recommend(_batch(), {f: np.arange(1, 5) for f in F.ITEM_FEATURES})


SPECS = [CascadeSpec.default(2, qs=(8, 5), k=3),
         CascadeSpec(("dssm", "tarq", "din"), ("recall", "coarse", "fine"), (9, 6, 4), 4)]


@pytest.mark.parametrize("initialization", ["reference", "keras"])
@pytest.mark.parametrize("spec", SPECS, ids=["dssm-din", "dssm-tarq-din"])
def test_from_config_of_get_config_is_the_same_cascade(spec, initialization):
    model = build_cascade(VOCAB, spec, loss="lcron", embedding_dim=4, loss_options={"temperature": 5.0}, seed=0,
                          data_fingerprint="abc", initialization=initialization)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON values only
    assert config == {"vocab_sizes": VOCAB, "embedding_dim": 4, "initialization": initialization,
                      "spec": spec.get_config(), "loss": "lcron", "loss_options": {"temperature": 5.0},
                      "data_fingerprint": "abc"}
    clone = CascadeModel.from_config(json.loads(json.dumps(config)))
    assert clone.spec == spec and clone.get_config() == config
    assert build_cascade(**config).get_config() == config  # what the README promises
    batch = _batch(n=12)
    before = [s.numpy() for s in clone.stage_scores(batch)]
    want = [s.numpy() for s in model.stage_scores(batch)]
    assert not np.allclose(before[0], want[0])  # another initialisation until the weights are copied
    clone.set_weights(model.get_weights())
    for got, expected in zip(clone.stage_scores(batch), want):
        np.testing.assert_array_equal(got.numpy(), expected)
    for got, expected in zip(clone.select(batch), model.select(batch)):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert [m.name for m in clone.stage_metrics] == [f"{n}_{m}" for n in spec.stage_names for m in ("recall", "ndcg")]


def test_a_config_json_from_before_the_spec_is_read():
    legacy = {"vocab_sizes": VOCAB, "stages": 3, "loss": "bce", "embedding_dim": 4, "loss_options": {},
              "qs": [12, 8, 5], "k": 4, "stage_models": ["dssm", "tarq", "din"], "data_fingerprint": "f"}
    model = CascadeModel.from_config(legacy)
    assert model.spec == CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din"), qs=(12, 8, 5), k=4)
    assert isinstance(model.stage_models[1], TARQ) and model.data_fingerprint == "f"
    with pytest.raises(ValueError, match="unknown CascadeModel config key 'towers'"):
        CascadeModel.from_config({**model.get_config(), "towers": [8]})


def test_get_config_refuses_cascades_build_cascade_cannot_rebuild():
    from tfcascade.losses import get

    with pytest.raises(NotImplementedError, match="stage 0 .*_TiedScores.* is not a StageModel"):
        CascadeModel([_TiedScores("video_id", 3), _TiedScores("author_id", 2)], loss="bce").get_config()
    with pytest.raises(NotImplementedError, match=r"stage 0 \(DSSM\) has non-default options \{'towers': \[16, 8\]\}"):
        CascadeModel([DSSM(VOCAB, towers=(16, 8)), DIN(VOCAB)], loss="bce").get_config()
    with pytest.raises(NotImplementedError, match="stage 1 has other vocab_sizes, embedding_dim or initialization"):
        CascadeModel([DSSM(VOCAB, 8), DIN(VOCAB, 4)], loss="bce").get_config()
    with pytest.raises(NotImplementedError, match="the loss is a BCELoss object"):
        CascadeModel([DSSM(VOCAB), DIN(VOCAB)], loss=get("bce", stages=2)).get_config()
    assert CascadeModel([DSSM(VOCAB, towers=(128, 64, 32)), DIN(VOCAB)], loss="bce").get_config()["spec"] == (
        CascadeSpec.default(2).get_config())  # defaults given explicitly are defaults


def test_the_default_spec_takes_each_stage_models_kind():
    model = CascadeModel([DSSM(VOCAB), TARQ(VOCAB), DIN(VOCAB)], loss="bce")
    assert model.spec == CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din"))


def test_stages_bring_their_own_callbacks_and_reports():
    from tfcascade.training.callbacks import CodebookMonitor

    options = {"seed": 3, "codebook_reset_every": 7}
    plain = build_cascade(VOCAB, CascadeSpec.default(3), loss="bce", embedding_dim=4)
    assert plain.training_callbacks(options) == [] and plain.training_metrics() == {}
    model = build_cascade(VOCAB, CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din")), loss="bce",
                          embedding_dim=4)
    (monitor,) = model.training_callbacks(options)
    assert isinstance(monitor, CodebookMonitor) and monitor.quantizer is model.stage_models[1].quantizer
    assert (monitor.every, monitor.seed) == (7, 3)
    usage = model.training_metrics()["tarq_utilisation"]
    assert len(usage) == model.stage_models[1].num_levels and all(isinstance(u, float) for u in usage)

    marker = keras.callbacks.Callback()

    class _Monitored(DSSM):  # any stage, not only TARQ, is asked
        def training_callbacks(self, options):
            return [marker]

        def training_metrics(self):
            return {"tarq_utilisation": "the earliest stage's", "monitored": options["seed"]}

    mixed = CascadeModel([_Monitored(VOCAB, 4), TARQ(VOCAB, 4), DIN(VOCAB, 4)], loss="bce")
    assert mixed.training_callbacks(options)[0] is marker and len(mixed.training_callbacks(options)) == 2
    assert mixed.training_metrics()["tarq_utilisation"] == "the earliest stage's"
    assert mixed.training_metrics()["monitored"] == 3
