"""The reference DIN's target attention against a float64 numpy re-computation of its formula."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.layers import SoftmaxTargetAttention

RNG = np.random.default_rng(3)


def numpy_attention(layer, targets, history, mask):
    """The reference's construction, literally: the MLP on the concatenation [h_j ; q], padding
    logits replaced by −2³⁰ + 1, a softmax over the history, the weighted sum of the (zeroed
    where padded) history embeddings."""
    w1, b1 = layer.pair.kernel.numpy().astype(np.float64), layer.pair.bias.numpy().astype(np.float64)
    w2, b2 = layer.out.kernel.numpy().astype(np.float64), layer.out.bias.numpy().astype(np.float64)
    out = np.zeros_like(targets)
    for b in range(targets.shape[0]):
        for i in range(targets.shape[1]):
            logits = np.array([np.maximum(np.concatenate([history[b, j], targets[b, i]]) @ w1 + b1, 0) @ w2 + b2
                               for j in range(history.shape[1])])[:, 0]
            logits = np.where(mask[b] > 0, logits, -(2.0**30) + 1)
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            out[b, i] = weights @ (history[b] * mask[b][:, None])
    return out


@pytest.mark.parametrize("initialization", ["reference", "keras"])
def test_equals_the_reference_formula_with_padding_and_an_empty_history(initialization):
    targets = RNG.normal(size=(3, 4, 6))
    history = RNG.normal(size=(3, 7, 6))
    mask = (RNG.random((3, 7)) < 0.6).astype(np.float64)
    mask[0, 0] = 1
    mask[2] = 0  # no history at all: the interest is zero
    layer = SoftmaxTargetAttention(hidden=5, initialization=initialization, dtype="float64")
    got = layer(tf.constant(targets), tf.constant(history), tf.constant(mask)).numpy()
    want = numpy_attention(layer, targets, history, mask)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[2], 0.0)
    weights = layer.weights_of(tf.constant(targets), tf.constant(history), tf.constant(mask)).numpy()
    np.testing.assert_allclose(weights[:2].sum(-1), 1.0, rtol=1e-12)
    assert np.all(weights[:2][np.broadcast_to(mask[:2, None, :] == 0, weights[:2].shape)] == 0)


def test_gradients_equal_finite_differences():
    targets = tf.constant(RNG.normal(size=(2, 3, 4)))
    history = tf.constant(RNG.normal(size=(2, 5, 4)))
    mask = tf.constant([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], tf.float64)
    layer = SoftmaxTargetAttention(hidden=6, dtype="float64")
    probe = tf.constant(RNG.normal(size=(2, 3, 4)))

    def value(t, h):
        return tf.reduce_sum(layer(t, h, mask) * probe)

    with tf.GradientTape() as tape:
        tape.watch([targets, history])
        total = value(targets, history)
    grads = tape.gradient(total, [targets, history])
    for which, (base, grad) in enumerate(zip((targets, history), grads)):
        flat = base.numpy().ravel()
        numeric = np.zeros_like(flat)
        for k in range(flat.size):
            step = np.zeros_like(flat)
            step[k] = 1e-6
            args = [targets, history]
            args[which] = tf.constant((flat + step).reshape(base.shape))
            up = value(*args).numpy()
            args[which] = tf.constant((flat - step).reshape(base.shape))
            numeric[k] = (up - value(*args).numpy()) / 2e-6
        np.testing.assert_allclose(grad.numpy().ravel(), numeric, rtol=1e-6, atol=1e-8)


def test_builds_before_a_call_and_round_trips_its_config():
    layer = SoftmaxTargetAttention(hidden=8, initialization="keras", name="sta")
    layer.build((None, 5, 4))
    assert [tuple(w.shape) for w in layer.weights] == [(8, 8), (8,), (8, 1), (1,)]
    clone = SoftmaxTargetAttention.from_config(json.loads(json.dumps(layer.get_config())))
    assert (clone.hidden, clone.initialization) == (8, "keras")
    assert keras.utils.get_registered_name(SoftmaxTargetAttention) == "tfcascade>SoftmaxTargetAttention"
