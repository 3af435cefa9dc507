"""A program using tfcascade, run by ``test_keras3.py`` in a fresh interpreter, twice:

    python -c "import keras, runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')" \
        keras3_program.py OUT.json                     # a Keras 3 program: keras imported first
    TF_USE_LEGACY_KERAS=1 python keras3_program.py OUT.json   # its tf_keras twin

Both write the value and the gradients (in the stage scores and in the loss's own weights) of
every cascade loss on the same fixed float64 inputs, for the test to compare. Under Keras 3 it
also runs every function in ``CHECKS`` and records, per check, None (passed) or the error. Not
a test module itself: a tf_keras test process must not run its Keras 3 checks.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

import tfcascade
from tfcascade import features as F
from tfcascade import losses
from tfcascade._keras import keras
from tfcascade.layers import (
    DFTopK,
    FeatureEmbeddings,
    LapSumTopK,
    NeuralSortPermutation,
    ResidualQuantizer,
    SoftmaxTargetAttention,
    SoftSortPermutation,
    TargetAttention,
    TournamentTopK,
)
from tfcascade.losses import UncertaintyWeighting
from tfcascade.metrics import NDCG, JointRecall, StageRecall, joint_recall, ndcg, stage_recall
from tfcascade.ops import (
    dftopk,
    dftopk_logits,
    lapsum_topk,
    neural_sort,
    soft_sort,
    tournament_topk,
)

# Keras warnings that mean a tfcascade layer is not at home in Keras 3.
BAD_WARNINGS = ("mask", "build", "built", "variables", "serializ")

N = 12
RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, N)).astype("float32")
M = np.ones((16, N), bool)
M[1::3, -3:] = False
E = RNG.normal(size=(16, N, 3)).astype("float32")
WORK = Path(tempfile.mkdtemp())


def loss_inputs() -> tuple[np.ndarray, list[np.ndarray]]:
    """Three requests of 40 items: 10 truths labelled 30 − rank, blocks of 10 labelled 7, 6, 5,
    shuffled; four padding items in the second request; two float64 stage scores."""
    rng = np.random.default_rng(7)
    row = np.concatenate([30.0 - np.arange(10), np.repeat([7.0, 6.0, 5.0], 10)])
    labels = np.stack([rng.permutation(row) for _ in range(3)])
    labels[1, -4:] = -1.0
    return labels, [rng.normal(size=labels.shape) for _ in range(2)]


def loss_results() -> dict:
    """Per loss name: value, ∂/∂stage scores and ∂/∂ the loss's weights (by name; tf_keras
    names end with ``:0``, Keras 3 names do not)."""
    labels, scores = loss_inputs()
    out = {}
    for name in losses.names():
        loss = losses.get(name, stages=2)
        stage_scores = [tf.constant(s) for s in scores]
        loss(tf.constant(labels), stage_scores)  # builds the loss's weights
        weights = sorted(loss.trainable_weights, key=lambda w: w.name)
        with tf.GradientTape() as tape:
            tape.watch(stage_scores)
            value = loss(tf.constant(labels), stage_scores)
        grads = tape.gradient(value, stage_scores + list(weights))
        out[name] = {
            "dtype": value.dtype.name, "value": float(value),
            "score_grads": [g.numpy().tolist() for g in grads[:2]],
            "weight_grads": {w.name.removesuffix(":0"): float(g)
                             for w, g in zip(weights, grads[2:])},
        }
    return out


CHECKS: dict[str, Callable[[], None]] = {}


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


@check
def process_is_keras_3() -> None:
    import keras as keras_package

    assert keras_package.__version__.startswith("3."), keras_package.__version__
    assert tfcascade.keras_version() == "keras_3" and keras is keras_package
    assert "tf_keras" not in sys.modules, "tf_keras was imported by a Keras 3 program"


@check
def every_layer_and_loss_is_a_registered_keras_3_layer() -> None:
    import keras as keras_package

    made = [DFTopK(2), LapSumTopK(2), NeuralSortPermutation(), SoftSortPermutation(),
            TournamentTopK(2), FeatureEmbeddings({f: 3 for f in F.USER_FEATURES + F.ITEM_FEATURES}),
            TargetAttention(), SoftmaxTargetAttention(), ResidualQuantizer(), UncertaintyWeighting(["a"])]
    made += [losses.get(name, stages=2) for name in losses.names()]
    for layer in made:
        assert isinstance(layer, keras_package.layers.Layer), type(layer).__mro__
        name = keras_package.saving.get_registered_name(type(layer))
        assert name == f"tfcascade>{type(layer).__name__}", name


def _fit_save_load(model: keras.Model, inputs, targets, name: str) -> keras.Model:
    """Fits one epoch, saves ``name.keras``, reloads; the reloaded model predicts the same."""
    model.compile(optimizer="adam", loss="mse")
    model.fit(inputs, targets, epochs=1, batch_size=8, verbose=0)
    path = str(WORK / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    want = model.predict(inputs, verbose=0)
    got = loaded.predict(inputs, verbose=0)
    for g, w in zip(*(x if isinstance(x, list) else [x] for x in (got, want)), strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
    return loaded


def _masked_op_layer(layer, op: Callable, name: str) -> keras.Model:
    """A functional Keras 3 model Dense → ``layer(·, mask=valid)``: fit, ``.keras`` round trip,
    the same config after it, and the layer equal to its op. Returns the reloaded model."""
    scores = keras.Input((N,))
    valid = keras.Input((N,), dtype="bool")
    hidden = keras.layers.Dense(N, name="dense")(scores)
    model = keras.Model([scores, valid], layer(hidden, mask=valid))
    out_shape = model.predict([X, M], verbose=0).shape
    loaded = _fit_save_load(model, [X, M], np.zeros(out_shape, "float32"), name)
    revived = loaded.layers[-1]
    assert type(revived) is type(layer) and revived.get_config() == layer.get_config()
    hidden = loaded.get_layer("dense")(X)
    got, want = revived(hidden, mask=M).numpy(), op(hidden, M).numpy()
    if layer.jit_compile:  # XLA may fuse differently: float32 ulps
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    else:  # the layer is its op, bit for bit
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(loaded.predict([X, M], verbose=0), want, rtol=1e-5, atol=1e-6)
    return loaded


@check
def dftopk_layer_and_saved_model_export() -> None:
    model = _masked_op_layer(DFTopK(3, temperature=0.5), lambda x, m: dftopk(x, 3, 0.5, mask=m),
                             "dftopk")
    model.export(str(WORK / "dftopk_saved_model"), verbose=False)  # Keras 3's SavedModel export
    served = tf.saved_model.load(str(WORK / "dftopk_saved_model"))  # held: its variables live on it
    np.testing.assert_allclose(served.serve([X, M]).numpy(), model.predict([X, M], verbose=0),
                               rtol=1e-5, atol=1e-6)


@check
def dftopk_logits_layer() -> None:
    _masked_op_layer(DFTopK(4, temperature=2.0, return_logits=True),
                     lambda x, m: dftopk_logits(x, 4, 2.0, mask=m), "dftopk_logits")


@check
def dftopk_call_time_k() -> None:
    layer = DFTopK(3, temperature=0.5)
    np.testing.assert_array_equal(layer(X, k=5).numpy(), dftopk(X, 5, 0.5).numpy())
    k = tf.constant(np.arange(16) % 4 + 1)
    np.testing.assert_array_equal(layer(X, mask=M, k=k).numpy(), dftopk(X, k, 0.5, mask=M).numpy())


@check
def lapsum_layer() -> None:
    _masked_op_layer(LapSumTopK(3, alpha=0.2), lambda x, m: lapsum_topk(x, 3, 0.2, mask=m),
                     "lapsum")


@check
def neural_sort_layer() -> None:
    _masked_op_layer(NeuralSortPermutation(tau=0.3), lambda x, m: neural_sort(x, 0.3, mask=m),
                     "neural_sort")


@check
def soft_sort_layer_xla() -> None:
    _masked_op_layer(SoftSortPermutation(tau=0.3, jit_compile=True),
                     lambda x, m: soft_sort(x, 0.3, mask=m), "soft_sort_xla")


@check
def tournament_layer() -> None:
    layer = TournamentTopK(4, boost=5.0)
    emb = keras.Input((N, 3))
    scores = keras.Input((N,))
    outputs = layer(emb, keras.layers.Dense(N, name="dense")(scores))
    model = keras.Model([emb, scores], list(outputs))
    targets = [np.zeros((16, 4, 3), "float32"), np.zeros((16, 4), "float32")]
    loaded = _fit_save_load(model, [E, X], targets, "tournament")
    assert loaded.layers[-1].get_config() == layer.get_config()
    hidden = loaded.get_layer("dense")(X)
    for got, want in zip(loaded.layers[-1](E, hidden), tournament_topk(E, hidden, 4, boost=5.0)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@check
def feature_embeddings_layer() -> None:
    vocab = {f: 11 for f in F.USER_FEATURES + F.ITEM_FEATURES}
    inputs = {f: keras.Input((), dtype="int64", name=f) for f in F.USER_FEATURES}
    inputs.update({f: keras.Input((5,), dtype="int64", name=f) for f in F.ITEM_FEATURES})
    user, items = FeatureEmbeddings(vocab, dim=4)(inputs)
    model = keras.Model(inputs, [user, keras.layers.Dense(1)(items)])
    data = {f: RNG.integers(0, 11, size=(16,)) for f in F.USER_FEATURES}
    data.update({f: RNG.integers(0, 11, size=(16, 5)) for f in F.ITEM_FEATURES})
    targets = [np.zeros((16, 4 * len(F.USER_FEATURES)), "float32"), np.zeros((16, 5, 1), "float32")]
    loaded = _fit_save_load(model, data, targets, "feature_embeddings")
    layer = next(x for x in loaded.layers if isinstance(x, FeatureEmbeddings))
    assert layer.vocab_sizes == vocab and len(layer.weights) == len(vocab)


def _attention_after_fit_save_load(layer, name: str):
    """``layer`` (targets [B, 5, 4], history [B, 7, 4], mask) through fit, save and reload."""
    targets, history, mask = keras.Input((5, 4)), keras.Input((7, 4)), keras.Input((7,))
    model = keras.Model([targets, history, mask], layer(targets, history, mask))
    data = [RNG.normal(size=(16, 5, 4)).astype("float32"),
            RNG.normal(size=(16, 7, 4)).astype("float32"),
            (RNG.random((16, 7)) < 0.7).astype("float32")]
    return _fit_save_load(model, data, np.zeros((16, 5, 4), "float32"), name).layers[-1]


@check
def target_attention_layer() -> None:
    assert len(_attention_after_fit_save_load(TargetAttention(hidden=8), "target_attention").weights) == 6


@check
def softmax_target_attention_layer() -> None:
    loaded = _attention_after_fit_save_load(SoftmaxTargetAttention(hidden=8), "softmax_target_attention")
    assert [tuple(w.shape) for w in loaded.weights] == [(8, 8), (8,), (8, 1), (1,)]


@check
def residual_quantizer_layer() -> None:
    x = keras.Input((4,))
    layer = ResidualQuantizer(num_levels=2, codebook_size=8, sample_size=16)
    quantized, codes = layer(keras.layers.Dense(4)(x))
    model = keras.Model(x, [quantized, codes])
    data = RNG.normal(size=(32, 4)).astype("float32")
    model(data, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0  # the VQ loss, when training
    usage = layer.usage.numpy().copy()
    model.compile(optimizer="adam", loss=["mse", None])
    model.fit(data, [data, np.zeros((32, 2))], epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(layer.usage.numpy(), usage)  # the usage EMA moved during fit
    path = str(WORK / "rq.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for got, want in zip(loaded.predict(data, verbose=0), model.predict(data, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(loaded.layers[-1].usage.numpy(), layer.usage.numpy())
    assert layer.fit_kmeans(RNG.normal(size=(40, 4)), iterations=2) >= 0.0


@check
def losses_keep_float64_and_round_trip() -> None:
    labels, scores = loss_inputs()
    for name in losses.names():
        loss = losses.get(name, stages=2)
        value = loss(labels, [tf.constant(s) for s in scores], mask=labels >= 0)
        assert value.dtype == tf.float64, (name, value.dtype)
        config = loss.get_config()
        revived = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(loss))))
        assert type(revived) is type(loss) and revived.get_config() == config, name
        assert float(revived(labels, [tf.constant(s) for s in scores])) == float(value), name
        graph = tf.function(lambda y, a, b, loss=loss: loss(y, [a, b]), autograph=False)
        np.testing.assert_allclose(float(graph(labels, *scores)), float(value), rtol=1e-12)


class TwoStageModel(keras.Model):
    """Two linear stages over item features ``[B, n, d]``, trained by a cascade loss in
    ``compute_loss`` (Keras 3's signature), as docs/keras.md shows."""

    def __init__(self, loss_name: str):
        super().__init__()
        self.stages = [keras.layers.Dense(1, name=f"stage{t}") for t in range(2)]
        self.cascade_loss = losses.get(loss_name, stages=2)

    def call(self, items):
        return [keras.ops.squeeze(stage(items), -1) for stage in self.stages]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.cascade_loss(y, y_pred)


@check
def loss_trains_a_keras_3_model_with_fit() -> None:
    labels = np.stack([loss_inputs()[0]] * 8).reshape(24, 40).astype("float32")
    items = (RNG.normal(size=(24, 40, 4)) + labels[..., None] / 10).astype("float32")
    model = TwoStageModel("dftopk")
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(items, labels, epochs=4, batch_size=8, verbose=0).history["loss"]
    assert history[-1] < history[0], history
    assert not np.allclose([float(w) for w in model.cascade_loss.uwl.w.values()], 1.0)
    model_weights = {id(w) for w in model.trainable_weights}
    assert all(id(w) in model_weights for w in model.cascade_loss.trainable_weights)


@check
def streaming_metrics_equal_the_numpy_functions() -> None:
    labels, scores = loss_inputs()
    stacked = np.stack(scores, axis=1).astype("float32")
    want = joint_recall(labels, [stacked[:, 0], stacked[:, 1]], 10, (30, 20))
    metric = JointRecall(10, (30, 20))
    metric.update_state(labels, stacked)
    np.testing.assert_allclose(float(metric.result()), want, rtol=1e-6)
    metric = StageRecall(10, 20)
    metric.update_state(labels, stacked[:, 1])
    np.testing.assert_allclose(float(metric.result()), stage_recall(labels, stacked[:, 1], 10, 20),
                               rtol=1e-6)
    metric = NDCG(10, gain="exp")
    metric.update_state(labels, stacked[:, 1])
    np.testing.assert_allclose(float(metric.result()), ndcg(labels, stacked[:, 1], 10, gain="exp"),
                               rtol=1e-6)
    assert NDCG.from_config(metric.get_config()).get_config() == metric.get_config()
    inputs = keras.Input((2, 40))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=lambda y, p: 0.0 * tf.reduce_mean(p), metrics=[JointRecall(10, (30, 20))])
    got = model.evaluate(stacked, labels, verbose=0, return_dict=True)["joint_recall_at_10_at_20"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@check
def models_and_topkgat_refuse_keras_3() -> None:
    for module in ("tfcascade.models", "tfcascade.topkgat"):
        try:
            __import__(module)
        except ImportError as err:
            assert "TF_USE_LEGACY_KERAS=1" in str(err), str(err)
        else:
            raise AssertionError(f"import {module} did not raise ImportError under Keras 3")


def run_checks() -> dict[str, str | None]:
    results: dict[str, str | None] = {}
    for name, fn in CHECKS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fn()
                bad = [str(w.message) for w in caught
                       if any(word in str(w.message) for word in BAD_WARNINGS)]
                results[name] = f"warnings: {bad}" if bad else None
            except Exception:  # recorded for the test to report
                results[name] = traceback.format_exc(limit=-6)
    return results


def main() -> None:
    keras.utils.set_random_seed(0)  # the initial weights of the models the checks fit
    out = {"keras_version": tfcascade.keras_version(), "losses": loss_results()}
    if tfcascade.keras_version() == "keras_3":
        out["checks"] = run_checks()
    Path(sys.argv[-1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
