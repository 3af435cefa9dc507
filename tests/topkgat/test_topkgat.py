"""Tests of TopKGAT: layer against a dense numpy reference, metrics against brute force,
gradients against finite differences, training, serialisation, CLI and input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade._keras import keras
from tfcascade.data.interactions import Interactions, load_interactions
from tfcascade.topkgat import (
    AdamW,
    EarlyStopping,
    FullRankingEvaluator,
    NegativeSampler,
    TopKGAT,
    TrainConfig,
    aggregate,
    band_pass,
    bpr_loss,
    edge_weights,
    official_settings,
    train_topkgat,
)
from tfcascade.topkgat import training as training_module

# A small graph with duplicate edges (0,1) x2 and (2,3) x3, and isolated user 4 / item 5.
EDGES = np.array([[0, 1], [0, 1], [0, 2], [1, 0], [1, 3], [2, 3], [2, 3], [2, 3], [3, 0],
                  [3, 4], [0, 4]])
U, NI = 5, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def normalise(x):
    # Zero rows (nodes without neighbours after a layer) stay zero, as in tf.math.l2_normalize.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def dense_layer(xu, xi, beta, variant):
    """One layer written with the dense multiplicity matrix A[u, i] (numpy reference)."""
    a = np.zeros((U, NI))
    np.add.at(a, (EDGES[:, 0], EDGES[:, 1]), 1.0)
    du, di = a.sum(1), a.sum(0)
    norm = np.outer(np.where(du > 0, du, 1.0) ** -0.5 * (du > 0), np.where(di > 0, di, 1.0) ** -0.5 * (di > 0))
    s = normalise(xu) @ normalise(xi).T - (0.0 if beta is None else beta[:, None])
    if variant == "lightgcn":
        w = a * norm
        return w @ xi, w.T @ xu
    if variant == "softmax":
        e = a * np.exp(s)
        wu = e / np.maximum(e.sum(1, keepdims=True), 1e-300)
        wi = e / np.maximum(e.sum(0, keepdims=True), 1e-300)
        return wu @ xi, wi.T @ xu
    w = a * 4 * sigmoid(s) * sigmoid(-s) * norm
    return w @ xi, w.T @ xu


def test_band_pass_matches_formula():
    t = np.linspace(-8, 8, 101)
    np.testing.assert_allclose(band_pass(tf.constant(t)).numpy(), 4 * sigmoid(t) * sigmoid(-t), rtol=1e-12)
    assert band_pass(tf.constant(0.0)).numpy() == pytest.approx(1.0)
    np.testing.assert_allclose(band_pass(tf.constant(t)).numpy(), band_pass(tf.constant(-t)).numpy())


@pytest.mark.parametrize("variant", ["topkgat", "beta0", "softmax", "lightgcn"])
@pytest.mark.parametrize("combine,residual", [("last", False), ("mean", False), ("last", True)])
def test_propagate_matches_dense_reference(variant, combine, residual):
    tf.random.set_seed(1)
    model = TopKGAT(U, NI, len(EDGES), dim=4, num_layers=2, variant=variant, combine=combine,
                    residual=residual, residual_step=0.5, edges=EDGES)
    xu, xi = model.user_embedding.numpy().astype(np.float64), model.item_embedding.numpy().astype(np.float64)
    betas = np.tanh(model.beta_logits.numpy()) if model.uses_beta else None
    outs = [(xu, xi)]
    for layer in range(2):
        beta = None if betas is None or variant == "beta0" else betas[:, layer]
        nu, ni = dense_layer(xu, xi, beta, variant)
        if residual:
            nu, ni = xu + 0.5 * nu, xi + 0.5 * ni
        xu, xi = nu, ni
        outs.append((xu, xi))
    if combine == "mean":
        xu, xi = np.mean([o[0] for o in outs], 0), np.mean([o[1] for o in outs], 0)
    got_u, got_i = model.propagate()
    np.testing.assert_allclose(got_u.numpy(), xu, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_i.numpy(), xi, rtol=1e-4, atol=1e-6)
    # Isolated nodes receive nothing (no self-loop) unless there is a residual.
    if combine == "last" and not residual:
        assert np.all(got_u.numpy()[4] == 0) and np.all(got_i.numpy()[5] == 0)
    scores = model(tf.constant([0, 3]))
    np.testing.assert_allclose(scores.numpy(), xu[[0, 3]] @ xi.T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["topkgat", "softmax"])
def test_threshold_ranks_match_brute_force(variant):
    tf.random.set_seed(3)
    model = TopKGAT(U, NI, len(EDGES), dim=4, num_layers=3, variant=variant, edges=EDGES)
    betas = np.tanh(model.beta_logits.numpy().astype(np.float64))
    reps = [(model.user_embedding.numpy().astype(np.float64), model.item_embedding.numpy().astype(np.float64))]
    for layer in range(3):
        reps.append(dense_layer(*reps[-1], betas[:, layer], variant))
    want = np.stack([(normalise(reps[layer][0]) @ normalise(reps[layer][1]).T > betas[:, [layer]]).sum(1)
                     for layer in range(3)], axis=1)
    got = model.threshold_ranks(batch_size=2)  # users in several batches
    assert got.shape == (U, 3) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert TopKGAT(U, NI, len(EDGES), variant="beta0", edges=EDGES).threshold_ranks() is None
    assert TopKGAT(U, NI, len(EDGES), variant="lightgcn", edges=EDGES).threshold_ranks() is None


def test_lightgcn_defaults_to_layer_mean_and_topkgat_to_last():
    assert TopKGAT(U, NI, len(EDGES), variant="lightgcn").combine == "mean"
    assert TopKGAT(U, NI, len(EDGES)).combine == "last"


@pytest.mark.parametrize("variant", ["topkgat", "softmax"])
def test_layer_gradient_float64(variant):
    rng = np.random.default_rng(0)
    users, items = tf.constant(EDGES[:, 0], tf.int32), tf.constant(EDGES[:, 1], tf.int32)
    inv_u = tf.constant(np.where(np.bincount(EDGES[:, 0], minlength=U) > 0,
                                 np.bincount(EDGES[:, 0], minlength=U).clip(1) ** -0.5, 0.0))
    inv_i = tf.constant(np.where(np.bincount(EDGES[:, 1], minlength=NI) > 0,
                                 np.bincount(EDGES[:, 1], minlength=NI).clip(1) ** -0.5, 0.0))
    probe_u, probe_i = rng.normal(size=(U, 3)), rng.normal(size=(NI, 3))

    def layer(xu, xi, beta):
        wu, wi = edge_weights(xu, xi, users, items, tf.tanh(beta), inv_u, inv_i, variant)
        nu, ni = aggregate(xu, xi, users, items, wu, wi)
        return tf.reduce_sum(nu * probe_u) + tf.reduce_sum(ni * probe_i)

    args = [tf.constant(rng.normal(size=(U, 3))), tf.constant(rng.normal(size=(NI, 3))),
            tf.constant(rng.normal(size=(U,)))]
    theoretical, numerical = tf.test.compute_gradient(layer, args)
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-5)  # central differences, delta 1e-3


def brute_force_metrics(user_x, item_x, truth, exclude, ks, count_duplicates=True):
    """The official metric: n_gt counts the user's ground-truth rows (duplicates included)."""
    scores = user_x @ item_x.T
    results = {f"{m}@{k}": [] for m in ("recall", "ndcg") for k in ks}
    for u in np.unique(truth[:, 0]):
        rows = truth[truth[:, 0] == u, 1].tolist()
        gt = set(rows)
        seen = set(exclude[exclude[:, 0] == u, 1].tolist())
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen]
        for k in ks:
            hits = [1.0 if i in gt else 0.0 for i in ranked[:k]]
            n = min(len(rows) if count_duplicates else len(gt), k)
            results[f"recall@{k}"].append(sum(hits) / n)
            dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
            results[f"ndcg@{k}"].append(dcg / sum(1 / np.log2(r + 2) for r in range(n)))
    return {key: float(np.mean(v)) for key, v in results.items()}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), memory=st.sampled_from([1, 2**30]), dups=st.booleans())
def test_evaluator_matches_brute_force(seed, memory, dups):
    rng = np.random.default_rng(seed)
    users, items = 9, 25
    truth = np.stack([rng.integers(0, users - 2, 30), rng.integers(0, items, 30)], 1)  # with duplicates
    exclude = np.stack([rng.integers(0, users, 60), rng.integers(0, items, 60)], 1)
    user_x, item_x = rng.normal(size=(users, 4)), rng.normal(size=(items, 4))
    ks = (1, 3, 5, 10, 20)
    evaluator = FullRankingEvaluator(truth, exclude, users, items, ks, memory_bytes=memory,
                                     count_duplicates=dups)
    if memory == 1:
        assert len(evaluator.blocks) == len(np.unique(truth[:, 0]))  # one user per block
    got = evaluator.evaluate(user_x.astype(np.float32), item_x.astype(np.float32))
    want = brute_force_metrics(user_x.astype(np.float32), item_x.astype(np.float32), truth, exclude,
                               ks, count_duplicates=dups)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-5), key


def test_evaluator_perfect_and_excluded():
    # Item scores equal to the item id: user 0 likes the top items; excluded items never count.
    item_x = np.arange(10, dtype=np.float32)[:, None]
    user_x = np.ones((2, 1), np.float32)
    truth = np.array([[0, 9], [0, 8], [1, 9]])
    exclude = np.array([[1, 9]])
    got = FullRankingEvaluator(truth, exclude, 2, 10, ks=(1, 2)).evaluate(user_x, item_x)
    assert got["recall@2"] == pytest.approx(0.5)  # user 0: 1.0, user 1: its only item is excluded
    assert got["ndcg@1"] == pytest.approx(0.5)


def test_evaluator_counts_duplicate_truth_rows_like_the_official_code():
    # User 0's truth lists item 9 twice and item 8 once: n_gt = 3 rows, 2 distinct items.
    item_x = np.arange(10, dtype=np.float32)[:, None]
    user_x = np.ones((1, 1), np.float32)
    truth = np.array([[0, 9], [0, 9], [0, 8]])
    official = FullRankingEvaluator(truth, np.zeros((0, 2)), 1, 10, ks=(2, 5)).evaluate(user_x, item_x)
    assert official["recall@2"] == pytest.approx(1.0)  # 2 hits / min(3, 2)
    assert official["recall@5"] == pytest.approx(2 / 3)  # 2 hits / min(3, 5)
    ideal3 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert official["ndcg@5"] == pytest.approx((1 + 1 / np.log2(3)) / ideal3)
    unique = FullRankingEvaluator(truth, np.zeros((0, 2)), 1, 10, ks=(2, 5),
                                  count_duplicates=False).evaluate(user_x, item_x)
    assert unique["recall@5"] == pytest.approx(1.0) and unique["ndcg@5"] == pytest.approx(1.0)


def test_evaluator_ranks_equal_scores_by_item_id():
    # A user with a zero embedding (no training pairs in TopKGAT) ties every item: its list is
    # items 0, 1, 2, ... (excluded ones skipped), so truth at item 1 is hit at rank 2, item 4 at 3.
    user_x = np.zeros((1, 3), np.float32)
    item_x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    truth = np.array([[0, 1], [0, 4]])
    got = FullRankingEvaluator(truth, np.array([[0, 2], [0, 3]]), 1, 8, ks=(3,)).evaluate(user_x, item_x)
    assert got["recall@3"] == pytest.approx(1.0)
    assert got["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000))
def test_negative_sampler_avoids_training_items(seed):
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, 6, 40), rng.integers(0, 12, 40)], 1)  # dense: many rejections
    sampler = NegativeSampler(pairs, 12, seed=seed)
    known = set(map(tuple, pairs.tolist()))
    for _ in range(3):
        negatives = sampler.sample()
        assert negatives.shape == (40,) and negatives.min() >= 0 and negatives.max() < 12
        assert not any((u, j) in known for u, j in zip(pairs[:, 0], negatives, strict=True))


def test_negative_sampler_is_uniform_over_the_complement():
    # User 0 knows items {0, 1, 2} (item 1 twice); its negatives are uniform over items 3..9.
    pairs = np.array([[0, 0], [0, 1], [0, 1], [0, 2]] + [[1, 5]])
    sampler = NegativeSampler(pairs, 10, seed=7)
    draws = np.concatenate([sampler.sample()[:4] for _ in range(5000)])  # 20,000 draws for user 0
    counts = np.bincount(draws, minlength=10)
    assert counts[:3].sum() == 0
    expected = len(draws) / 7
    chi2 = float(((counts[3:] - expected) ** 2 / expected).sum())
    assert chi2 < 22.5  # chi-square, 6 degrees of freedom: p = 0.001
    # Fresh draws every call (the official code redraws every epoch).
    assert not np.array_equal(sampler.sample(), sampler.sample())


def test_negative_sampler_rejects_full_users():
    with pytest.raises(ValueError, match="user 0 has interacted with all 2 items"):
        NegativeSampler(np.array([[0, 0], [0, 1]]), 2)


def planted_data(users=120, items=60, groups=4, per_user=8, seed=0) -> Interactions:
    """Users of group g interact with items of group g: a structure the graph can learn."""
    rng = np.random.default_rng(seed)
    size = items // groups
    rows = []
    for u in range(users):
        g = u % groups
        chosen = rng.choice(np.arange(g * size, (g + 1) * size), per_user + 4, replace=False)
        rows.append([(u, int(i)) for i in chosen])
    train = np.array([p for r in rows for p in r[:per_user]])
    valid = np.array([p for r in rows for p in r[per_user:per_user + 2]])
    test = np.array([p for r in rows for p in r[per_user + 2:]])
    return Interactions(users, items, train, valid, test, name="planted")


@pytest.mark.parametrize("variant", ["topkgat", "lightgcn"])
def test_training_improves_ndcg_on_planted_graph(variant, tmp_path):
    data = planted_data()
    tf.random.set_seed(0)
    model = TopKGAT(data.num_users, data.num_items, len(data.train), dim=16, num_layers=2,
                    variant=variant, edges=data.train)
    before = FullRankingEvaluator(data.test, data.train, data.num_users, data.num_items).evaluate(
        *model.propagate())
    result = train_topkgat(model, data, TrainConfig(epochs=60, eval_every=20, lr=0.05),
                           log_dir=tmp_path / "tb")
    assert result.best_epoch in (20, 40, 60)
    assert result.test["ndcg@20"] > before["ndcg@20"] + 0.1
    assert result.test["ndcg@20"] > 0.5  # random ranking gets ~0.3 on 15 items of 60
    assert list(tmp_path.joinpath("tb").iterdir())  # TensorBoard events were written


def test_training_improves_ndcg_on_real_slice(real_data_dir):
    folder = real_data_dir / "topkgat" / "Ali-Display"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    data = load_interactions(folder).subset_users(1500)
    tf.random.set_seed(0)
    model = TopKGAT(data.num_users, data.num_items, len(data.train), dim=32, edges=data.train)
    before = FullRankingEvaluator(data.valid, data.train, data.num_users, data.num_items).evaluate(
        *model.propagate())
    result = train_topkgat(model, data, TrainConfig(epochs=40, eval_every=20))
    assert result.valid["ndcg@20"] > 2 * before["ndcg@20"]


def official_stopping(scores: dict, interval: int, stopping_step: int, max_epochs: int):
    """The official main.py loop, transcribed: (best_epoch, epochs_run, validated epochs)."""
    best_score, best_epoch, validated, epoch = 0.0, 0, [0], 0
    if scores[0] > best_score:
        best_score, best_epoch = scores[0], 0
    for epoch in range(1, max_epochs + 1):
        if epoch % interval == 0:
            validated.append(epoch)
            if scores[epoch] > best_score:
                best_score, best_epoch = scores[epoch], epoch
        if epoch - best_epoch >= stopping_step * interval:
            break
    return best_epoch, epoch, validated


class ScriptedEvaluator:
    """Stands in for FullRankingEvaluator: returns a scripted NDCG@20 per call, records inputs."""

    script: list = []
    inputs: list = []

    def __init__(self, *args, **kwargs):
        self.calls = 0

    def evaluate(self, user_x, item_x):
        ScriptedEvaluator.inputs.append((np.array(user_x), np.array(item_x)))
        value = ScriptedEvaluator.script.pop(0) if ScriptedEvaluator.script else 0.0
        return {"recall@20": value, "ndcg@20": value}


@pytest.mark.parametrize("sequence", [
    [0.1, 0.2, 0.2, 0.15, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],  # tie is not an improvement
    [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # nothing beats the initial weights: best epoch 0
    [0.0, 0.0, 0.0, 0.0, 0.0],  # never above the initial best score 0
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],  # still improving at the epoch cap
])
def test_early_stopping_follows_the_official_rule(sequence, monkeypatch):
    interval, steps, cap = 2, 3, 14
    scores = {e: (sequence[e // interval] if e // interval < len(sequence) else 0.0)
              for e in range(0, cap + 1)}
    want_best, want_run, want_validated = official_stopping(scores, interval, steps, cap)
    # The class alone.
    stopper, epoch = EarlyStopping(interval * steps), 0
    stopper.update(0, scores[0])
    for epoch in range(1, cap + 1):
        if epoch % interval == 0:
            stopper.update(epoch, scores[epoch])
        if stopper.should_stop(epoch):
            break
    assert (stopper.best_epoch, epoch) == (want_best, want_run)
    # The training loop, with the evaluator scripted.
    ScriptedEvaluator.script = [scores[e] for e in want_validated]
    monkeypatch.setattr(training_module, "FullRankingEvaluator", ScriptedEvaluator)
    data = planted_data(users=20, items=60)
    model = TopKGAT(data.num_users, data.num_items, len(data.train), dim=4, num_layers=1, edges=data.train)
    result = train_topkgat(model, data, TrainConfig(epochs=cap, eval_every=interval,
                                                    patience=interval * steps, jit_compile=False))
    assert (result.best_epoch, result.epochs_run) == (want_best, want_run)
    assert [h[0] for h in result.history] == want_validated


def test_validation_ranks_the_weights_before_the_update_and_best_weights_restored(monkeypatch):
    ScriptedEvaluator.script = [0.1, 0.3, 0.2, 0.2]  # epochs 0, 1, 2, 3: best = 1
    ScriptedEvaluator.inputs = []
    monkeypatch.setattr(training_module, "FullRankingEvaluator", ScriptedEvaluator)
    data = planted_data(users=20, items=60)
    tf.random.set_seed(0)
    model = TopKGAT(data.num_users, data.num_items, len(data.train), dim=4, num_layers=2, edges=data.train)
    initial = [x.numpy() for x in model.propagate()]
    result = train_topkgat(model, data, TrainConfig(epochs=3, eval_every=1, patience=10, jit_compile=False))
    assert result.best_epoch == 1 and [h[0] for h in result.history] == [0, 1, 2, 3]
    # Epoch 0 and epoch 1 both rank the initial weights (epoch 1's loss is computed from them).
    for got in ScriptedEvaluator.inputs[:2]:
        np.testing.assert_allclose(got[0], initial[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], initial[1], rtol=1e-6)
    assert not np.allclose(ScriptedEvaluator.inputs[2][0], initial[0])
    # The best weights (those ranked at epoch 1, the initial ones) are restored.
    np.testing.assert_allclose(model.propagate()[0].numpy(), initial[0], rtol=1e-6)


def torch_adamw_reference(params, grads_per_step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's documented update, in float64 numpy."""
    p = [x.astype(np.float64).copy() for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, grads in enumerate(grads_per_step, start=1):
        for k, g in enumerate(grads):
            p[k] *= 1 - lr * wd
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            denom = np.sqrt(v[k]) / np.sqrt(1 - b2**t) + eps
            p[k] -= lr / (1 - b1**t) * m[k] / denom
    return p


@pytest.mark.parametrize("scale", [1e-8, 1.0])
def test_adamw_matches_pytorch_rule(scale):
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    grads = [[(rng.normal(size=x.shape) * scale).astype(np.float32) for x in params] for _ in range(6)]
    variables = [tf.Variable(x) for x in params]
    optimizer = AdamW(variables, lr=0.1, weight_decay=1e-2)
    for step_grads in grads:
        optimizer.apply([tf.constant(g) for g in step_grads])
    want = torch_adamw_reference(params, grads, lr=0.1, wd=1e-2)
    for variable, w in zip(variables, want, strict=True):
        np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5, atol=1e-6)
    if scale < 1e-6:
        # Keras's AdamW (ε on the uncorrected √v) moves much less at gradient scale ~ε.
        keras_vars = [tf.Variable(x) for x in params]
        keras_opt = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=1e-2, epsilon=1e-8)
        for step_grads in grads:
            keras_opt.apply_gradients(zip([tf.constant(g) for g in step_grads], keras_vars, strict=True))
        moved_keras = np.abs(keras_vars[0].numpy() - params[0]).mean()
        moved_torch = np.abs(want[0] - params[0]).mean()
        assert moved_keras < 0.5 * moved_torch


def test_bpr_regulariser_matches_numpy():
    rng = np.random.default_rng(3)
    e_u, e_i = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    x_u, x_i = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    users, items, negs = np.array([0, 0, 1, 4, 4, 4]), np.array([1, 1, 2, 3, 5, 6]), np.array([0, 2, 3, 0, 1, 2])
    got = bpr_loss(tf.constant(x_u), tf.constant(x_i), tf.constant(users), tf.constant(items),
                   tf.constant(negs), 0.3, tf.constant(e_u), tf.constant(e_i)).numpy()
    margin = (x_u[users] * x_i[negs]).sum(1) - (x_u[users] * x_i[items]).sum(1)
    # Per row (duplicate rows and repeated users count once per row), means over rows.
    penalty = 0.5 * ((e_u[users] ** 2).sum(1).mean() + (e_i[items] ** 2).sum(1).mean()
                     + (e_i[negs] ** 2).sum(1).mean())
    want = np.log1p(np.exp(margin)).mean() + 0.3 * penalty
    assert got == pytest.approx(want, rel=1e-10)


def test_bpr_loss_over_many_rows_matches_float64_under_xla():
    # Food's first epochs: 3·10⁵ rows, scores ~1e-5, every term near ln 2. A float32 XLA
    # reduction of such a sum is off by ~2e-4 of itself; the gradient is 1/rows per term either way.
    rng = np.random.default_rng(5)
    rows, d = 319_848, 4
    x_u = (1e-3 * rng.standard_normal((50, d))).astype(np.float32)
    x_i = (1e-3 * rng.standard_normal((80, d))).astype(np.float32)
    users, items, negs = (rng.integers(0, n, rows) for n in (50, 80, 80))
    step = tf.function(lambda a, b: bpr_loss(a, b, users, items, negs), jit_compile=True)

    def loss_and_grad(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = step(a, b)
        return loss, tape.gradient(loss, a)

    got, grad = loss_and_grad(tf.constant(x_u), tf.constant(x_i))
    x_u64, x_i64 = x_u.astype(np.float64), x_i.astype(np.float64)
    margin = (x_u64[users] * x_i64[negs]).sum(1) - (x_u64[users] * x_i64[items]).sum(1)
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(np.logaddexp(0, margin).mean(), rel=1e-6)
    sig = 1 / (1 + np.exp(-margin)) / rows
    want_grad = np.zeros_like(x_u64)
    np.add.at(want_grad, users, sig[:, None] * (x_i64[negs] - x_i64[items]))
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), want_grad, rtol=1e-4, atol=1e-12)


def test_official_settings_per_dataset():
    assert official_settings("Food") == {"layers": 4, "lr": 1e-2, "reg": 0.0}
    assert official_settings("Ali-Display") == {"layers": 4, "lr": 1e-1, "reg": 1e-4}
    assert official_settings("Epinions") == {"layers": 4, "lr": 1e-1, "reg": 1e-4}
    assert official_settings("Gowalla") == {"layers": 3, "lr": 1e-1, "reg": 0.0}
    assert official_settings("other") == {"layers": 4, "lr": 1e-1, "reg": 1e-4}
    assert TrainConfig().epochs == 2000 and TrainConfig().patience == 200


def test_serialisation_round_trip(tmp_path):
    tf.random.set_seed(3)
    model = TopKGAT(U, NI, len(EDGES), dim=4, num_layers=2, edges=EDGES)
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    clone = TopKGAT.from_config(model.get_config())
    clone.load_weights(path)
    np.testing.assert_allclose(clone(tf.range(U)).numpy(), model(tf.range(U)).numpy(), rtol=1e-6)
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(model))
    assert isinstance(restored, TopKGAT) and restored.get_config() == model.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant must be one of .* got variant='gat'"):
        TopKGAT(U, NI, len(EDGES), variant="gat")
    with pytest.raises(ValueError, match="num_users must be a positive integer, got num_users=0"):
        TopKGAT(0, NI, len(EDGES))
    with pytest.raises(ValueError, match="combine must be one of"):
        TopKGAT(U, NI, len(EDGES), combine="sum")
    with pytest.raises(ValueError, match=r"edges\[1\] has item id 6 outside \[0, 6\)"):
        TopKGAT(U, NI, 2, edges=np.array([[0, 1], [1, 6]]))
    with pytest.raises(ValueError, match="edges must have num_edges=3 rows, got 2"):
        TopKGAT(U, NI, 3, edges=np.array([[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="ks must be <= num_items=6"):
        FullRankingEvaluator(EDGES, EDGES, U, NI, ks=(1, 20))
    with pytest.raises(ValueError, match="lr must be > 0, got lr=0"):
        TrainConfig(lr=0)
    data = planted_data()
    with pytest.raises(ValueError, match="do not match the data"):
        train_topkgat(TopKGAT(U, NI, len(EDGES), edges=EDGES), data)


def _planted_folder(folder):
    """A small planted dataset written in the official layout (info.txt + train/valid/test)."""
    data = planted_data(users=40, items=60)
    folder.mkdir()
    (folder / "info.txt").write_text(f"users {data.num_users}\nitems {data.num_items}\n")
    for split in ("train", "valid", "test"):
        np.savetxt(folder / f"{split}.txt", data.split(split), fmt="%d")
    return folder


def test_cli_writes_json(tmp_path):
    from tfcascade.cli.main import main

    folder = _planted_folder(tmp_path / "planted")
    out = tmp_path / "result.json"
    assert main(["topkgat", "--data", str(folder), "--out", str(out), "--epochs", "4",
                 "--eval-every", "2", "--dim", "8", "--layers", "2", "--no-jit"]) == 0
    result = json.loads(out.read_text())
    assert result["best_epoch"] in (2, 4) and result["seconds_per_epoch"] > 0
    expected = {f"{m}@{k}" for m in ("recall", "ndcg") for k in (1, 3, 5, 10, 20)}
    assert set(result["valid"]) == expected and set(result["test"]) == expected
    thresholds = result["thresholds"]
    assert [t["layer"] for t in thresholds] == [1, 2]
    for t in thresholds:
        assert -1 <= t["beta_mean"] <= 1 and 0 <= t["rank_p10"] <= t["rank_median"] <= t["rank_p90"] <= 60


def test_cli_defaults_are_the_official_settings_of_the_dataset(tmp_path):
    from tfcascade.cli.main import main

    folder = _planted_folder(tmp_path / "Food")  # the folder name picks the official settings
    out = tmp_path / "result.json"
    assert main(["topkgat", "--data", str(folder), "--out", str(out), "--epochs", "2",
                 "--eval-every", "2", "--dim", "4", "--no-jit"]) == 0
    result = json.loads(out.read_text())
    assert result["layers"] == 4
    assert result["config"]["lr"] == 0.01 and result["config"]["reg"] == 0.0
    assert result["config"]["epochs"] == 2 and result["config"]["patience"] == 200
