"""Operator layers: equal to their ops, serialisable, SavedModel and Keras round trips, TFRS use;
the stage blocks build before a call. Keras 3: test_keras3.py."""

import numpy as np
import pytest
import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.layers import (
    DFTopK,
    FeatureEmbeddings,
    LapSumTopK,
    NeuralSortPermutation,
    SoftSortPermutation,
    TargetAttention,
    TournamentTopK,
)
from tfcascade.ops.dftopk import dftopk, dftopk_logits
from tfcascade.ops.lapsum import lapsum_topk
from tfcascade.ops.soft_permutation import neural_sort, soft_sort
from tfcascade.ops.tournament import tournament_topk

X = tf.random.stateless_normal([4, 12], seed=[1, 2])
MASK = tf.constant(np.array([[1] * 12, [1] * 10 + [0, 0], [1] * 12, [0] + [1] * 11], bool))

CASES = [
    (DFTopK(3, temperature=0.5), lambda x, m: dftopk(x, 3, 0.5, mask=m)),
    (DFTopK(3, temperature=0.5, return_logits=True, jit_compile=True), lambda x, m: dftopk_logits(x, 3, 0.5, mask=m)),
    (LapSumTopK(3, alpha=0.2), lambda x, m: lapsum_topk(x, 3, 0.2, mask=m)),
    (NeuralSortPermutation(tau=0.3), lambda x, m: neural_sort(x, 0.3, mask=m)),
    (SoftSortPermutation(tau=0.3, jit_compile=True), lambda x, m: soft_sort(x, 0.3, mask=m)),
]


@pytest.mark.parametrize("layer,op", CASES)
def test_layer_equals_op_and_config_round_trip(layer, op):
    np.testing.assert_allclose(layer(X, mask=MASK).numpy(), op(X, MASK).numpy(), atol=1e-6)
    clone = type(layer).from_config(layer.get_config())
    np.testing.assert_allclose(clone(X, mask=MASK).numpy(), op(X, MASK).numpy(), atol=1e-6)
    assert keras.utils.get_registered_name(type(layer)).startswith("tfcascade>")


def test_k_can_be_overridden_per_call():
    np.testing.assert_allclose(DFTopK(3)(X, k=5).numpy(), dftopk(X, 5).numpy(), atol=1e-6)


def test_tournament_layer():
    e = tf.random.stateless_normal([4, 12, 3], seed=[3, 4])
    got = TournamentTopK(4, boost=5.0)(e, X)
    want = tournament_topk(e, X, 4, boost=5.0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-6)


def _model():
    scores = keras.Input([12])
    out = DFTopK(3, temperature=0.5)(keras.layers.Dense(12)(scores))
    return keras.Model(scores, out)


def test_keras_save_and_load(tmp_path):
    model = _model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(X).numpy(), model(X).numpy(), atol=1e-7)


def test_saved_model_round_trip_and_gradients(tmp_path):
    model = _model()
    tf.saved_model.save(model, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(loaded(X).numpy(), model(X).numpy(), atol=1e-7)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(model(X) * tf.range(12, dtype=tf.float32))
    grads = tape.gradient(y, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_usable_inside_a_tfrs_model():
    import tensorflow_recommenders as tfrs

    class Ranker(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)
            self.topk = DFTopK(2, temperature=0.5, return_logits=True)

        def compute_loss(self, inputs, training=False):
            features, labels = inputs
            logits = self.topk(tf.squeeze(self.dense(features), -1))
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))

    model = Ranker()
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    feats = tf.random.stateless_normal([8, 6, 3], seed=[5, 6])
    labels = tf.cast(tf.random.stateless_uniform([8, 6], seed=[7, 8]) < 0.3, tf.float32)
    history = model.fit(tf.data.Dataset.from_tensors((feats, labels)), epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def _masked_model(layer):
    scores = keras.Input([12])
    mask = keras.Input([12], dtype=tf.bool)
    out = layer(keras.layers.Dense(12)(scores), mask=mask)
    return keras.Model([scores, mask], out)


def _tournament_model(layer):
    emb = keras.Input([12, 3])
    scores = keras.Input([12])
    out_e, out_v = layer(emb, keras.layers.Dense(12)(scores))
    return keras.Model([emb, scores], [out_e, out_v])


E = tf.random.stateless_normal([4, 12, 3], seed=[9, 9])
ROUND_TRIP = [
    (lambda: _masked_model(DFTopK(3, temperature=0.5)), (X, MASK)),
    (lambda: _masked_model(DFTopK(4, temperature=2.0, return_logits=True, jit_compile=True)), (X, MASK)),
    (lambda: _masked_model(LapSumTopK(3, alpha=0.2)), (X, MASK)),
    (lambda: _masked_model(LapSumTopK(5, alpha=0.7, jit_compile=True)), (X, MASK)),
    (lambda: _masked_model(NeuralSortPermutation(tau=0.3)), (X, MASK)),
    (lambda: _masked_model(SoftSortPermutation(tau=0.3, jit_compile=True)), (X, MASK)),
    (lambda: _tournament_model(TournamentTopK(4, boost=5.0)), (E, X)),
    (lambda: _tournament_model(TournamentTopK(3, boost=5.0, jit_compile=True)), (E, X)),
]


def _outputs(model, inputs):
    out = model(list(inputs))
    return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("build,inputs", ROUND_TRIP)
def test_every_layer_survives_keras_and_saved_model_round_trips(build, inputs, tmp_path):
    model = build()
    want = _outputs(model, inputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    # Same graph, possibly different op fusion between eager and traced execution: float32 ulps.
    for got, w in zip(_outputs(keras.models.load_model(path), inputs), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    tf.saved_model.save(model, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    for got, w in zip(_outputs(loaded, inputs), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_call_time_k_for_lapsum_and_graph_parity():
    layer = LapSumTopK(2, alpha=0.5)
    np.testing.assert_allclose(layer(X, k=6).numpy().sum(-1), 6.0, atol=1e-5)
    graph = tf.function(lambda a: layer(a, mask=MASK, k=tf.constant([1, 2, 3, 4])))(X)
    np.testing.assert_allclose(graph.numpy(), lapsum_topk(X, tf.constant([1, 2, 3, 4]), 0.5, mask=MASK).numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("layer", [DFTopK(3), DFTopK(3, jit_compile=False), LapSumTopK(3, jit_compile=True),
                                   NeuralSortPermutation(0.5, jit_compile=True), SoftSortPermutation(0.5)])
def test_nan_scores_raise_with_and_without_xla(layer):
    bad = tf.constant([[1.0, np.nan, 0.0, 2.0, 3.0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        layer(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        tf.function(lambda a: layer(a))(bad)


def test_jit_defaults_follow_the_measurement_and_serialise():
    assert not DFTopK(2).jit_compile and not TournamentTopK(2).jit_compile
    assert not LapSumTopK(2).jit_compile and not NeuralSortPermutation().jit_compile
    assert not SoftSortPermutation().jit_compile
    assert DFTopK.from_config(DFTopK(2, jit_compile=True).get_config()).jit_compile is True


def test_dftopk_layer_per_row_k_tensor():
    k = tf.constant([1, 2, 3, 4])
    np.testing.assert_allclose(DFTopK(2, temperature=0.5)(X, mask=MASK, k=k).numpy(),
                               dftopk(X, k, 0.5, mask=MASK).numpy(), atol=1e-6)


def test_stage_blocks_build_before_a_call_and_keep_the_variable_names_of_a_call():
    """``build`` (which a reloaded layer runs before its first call) makes every weight; inside
    a call (where tf_keras builds) the names stay ``layer/sublayer/kernel``."""
    attention = TargetAttention(hidden=8)
    attention.build((None, 5, 4))
    assert [tuple(w.shape) for w in attention.weights] == [(4, 8), (8,), (4, 8), (4, 8), (8, 1), (1,)]
    called = TargetAttention(hidden=8, name="ta")
    called(tf.zeros([2, 5, 4]), tf.zeros([2, 7, 4]), tf.ones([2, 7]))
    assert [w.name for w in called.weights] == ["ta/q/kernel:0", "ta/q/bias:0", "ta/h/kernel:0",
                                                "ta/qh/kernel:0", "ta/w/kernel:0", "ta/w/bias:0"]
    vocab = {f: 7 for f in F.USER_FEATURES + F.ITEM_FEATURES}
    embeddings = FeatureEmbeddings(vocab, dim=3)
    embeddings.build(None)
    assert len(embeddings.weights) == len(vocab) and all(w.shape == (7, 3) for w in embeddings.weights)
    called = FeatureEmbeddings(vocab, dim=3, name="fe")
    called({f: tf.zeros([2, 4], tf.int64) for f in vocab})
    assert sorted(w.name for w in called.weights) == sorted(f"fe/emb_{f}/embeddings:0" for f in vocab)


def test_dftopk_under_xla_trains_in_fit_like_the_plain_layer():
    data = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")

    def trained(jit_compile):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((8,))
        model = keras.Model(inputs, DFTopK(k=3, jit_compile=jit_compile)(keras.layers.Dense(8)(inputs)))
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(data, data, batch_size=8, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()

    for plain, compiled in zip(trained(False), trained(True)):
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-6)
