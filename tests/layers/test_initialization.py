"""The two initialisation schemes of the stage models (``tfcascade.layers.initialization``)."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.layers.feature_embeddings import FeatureEmbeddings, mlp
from tfcascade.layers.initialization import (
    FanInDense,
    NormalWithZeroRow,
    check_initialization,
    dense,
)
from tfcascade.models.cascade import build_cascade

VOCAB = {f: 400 for f in F.USER_FEATURES + F.ITEM_FEATURES}


def test_reference_embeddings_are_standard_normal_with_a_zero_padding_row():
    keras.utils.set_random_seed(0)
    layer = FeatureEmbeddings(VOCAB, dim=64, initialization="reference")
    layer.build()
    for table in layer.tables.values():
        weights = table.embeddings.numpy()
        np.testing.assert_array_equal(weights[0], 0.0)  # nn.Embedding(padding_idx=0)
        rest = weights[1:].ravel()
        assert abs(rest.mean()) < 0.02 and abs(rest.std() - 1.0) < 0.02


def test_keras_embeddings_keep_the_narrow_normal():
    keras.utils.set_random_seed(0)
    layer = FeatureEmbeddings(VOCAB, dim=64, initialization="keras")
    layer.build()
    weights = layer.tables["video_id"].embeddings.numpy()
    assert abs(weights.std() - 0.05) < 0.002 and np.abs(weights[0]).max() > 0


@pytest.mark.parametrize("fan_in", [3, 40, 168])
def test_reference_dense_is_torch_linear_uniform_on_kernel_and_bias(fan_in):
    keras.utils.set_random_seed(1)
    layer = dense(512, "reference")
    layer.build((None, fan_in))
    bound = 1.0 / math.sqrt(fan_in)
    for weights in (layer.kernel.numpy(), layer.bias.numpy()):
        assert np.abs(weights).max() <= bound
        assert np.abs(weights).max() > 0.95 * bound  # uniform over the whole interval
        assert abs(weights.std() - bound / math.sqrt(3)) < 0.1 * bound  # the std of U(-b, b)
    assert isinstance(layer, FanInDense)


def test_keras_dense_is_glorot_with_zero_bias():
    keras.utils.set_random_seed(1)
    layer = dense(64, "keras")
    layer.build((None, 40))
    assert type(layer) is keras.layers.Dense
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    assert np.abs(layer.kernel.numpy()).max() <= math.sqrt(6 / (40 + 64))


def test_mlp_and_the_zero_row_initializer_round_trip_through_their_configs():
    stack = mlp([8, 1], "scorer", "reference")
    stack.build((None, 5))
    clone = keras.Sequential.from_config(json.loads(json.dumps(stack.get_config())))
    clone.build((None, 5))
    assert [type(layer) for layer in clone.layers] == [FanInDense, FanInDense]
    init = NormalWithZeroRow.from_config(NormalWithZeroRow(2.0).get_config())
    values = init((6, 3)).numpy()
    assert init.stddev == 2.0 and (values[0] == 0).all() and (values[1:] != 0).all()


def test_a_cascade_starts_from_the_scheme_it_is_built_with():
    reference = build_cascade(VOCAB, stages=2, seed=0)
    keras_init = build_cascade(VOCAB, stages=2, seed=0, initialization="keras")
    batch = {f: tf.ones([2], tf.int64) for f in F.USER_FEATURES}
    batch.update({f: tf.ones([2, 4], tf.int64) for f in F.ITEM_FEATURES})
    batch.update({f: tf.ones([2, 3], tf.int64) for f in F.HISTORY_FEATURES})
    for model in (reference, keras_init):
        model.stage_scores(batch)
    assert reference.get_config()["initialization"] == "reference"
    assert keras_init.get_config()["initialization"] == "keras"
    stds = [np.std(m.stage_models[0].embeddings.tables["user_id"].embeddings.numpy()[1:]) for m in
            (reference, keras_init)]
    assert stds[0] > 0.9 and stds[1] < 0.06


def test_an_unknown_scheme_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"initialization must be one of \('reference', 'keras'\), got "
                                         r"initialization='torch'"):
        check_initialization("torch")
    with pytest.raises(ValueError, match="initialization='glorot'"):
        build_cascade(VOCAB, stages=2, initialization="glorot")
