"""Every bad input of the operators gives an error naming the argument and its value."""

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.ops.dftopk import dftopk
from tfcascade.ops.hard_topk import hard_topk_mask
from tfcascade.ops.lapsum import lapsum_topk
from tfcascade.ops.soft_permutation import neural_sort

OPS = [lambda s, k, **kw: dftopk(s, k, **kw), lambda s, k, **kw: hard_topk_mask(s, k, mask=kw.get("mask")),
       lambda s, k, **kw: lapsum_topk(s, k, mask=kw.get("mask"))]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("k,err,match", [
    (0, ValueError, "k=0"), (-2, ValueError, "k=-2"), (6, ValueError, "k=6"), (2.5, TypeError, "k=2.5"),
    (True, TypeError, "k=True"),
])
def test_bad_k(op, k, err, match):
    with pytest.raises(err, match=match):
        op(tf.zeros([2, 5]), k)


@pytest.mark.parametrize("op", OPS)
def test_bad_scores_and_masks(op):
    with pytest.raises(ValueError, match="rank >= 1"):
        op(tf.constant(1.0), 1)
    with pytest.raises(TypeError, match="int32"):
        op(tf.zeros([2, 5], tf.int32), 1)
    with pytest.raises(ValueError, match="mask"):
        op(tf.zeros([2, 5]), 1, mask=tf.ones([2, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        op(tf.constant([[0.0, np.nan, 1.0]]), 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="valid items"):
        op(tf.zeros([1, 4]), 3, mask=[[1, 1, 0, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="valid items"):
        op(tf.zeros([2, 4]), tf.constant([1, 5]))


def test_temperature_and_graph_mode_assertions():
    with pytest.raises(ValueError, match="temperature=0"):
        dftopk(tf.zeros([1, 3]), 1, temperature=0)
    with pytest.raises(ValueError, match="temperature=-1"):
        dftopk(tf.zeros([1, 3]), 1, temperature=-1)
    with pytest.raises(ValueError, match="tau=nan"):
        neural_sort(tf.zeros([1, 3]), float("nan"))
    fn = tf.function(lambda s: dftopk(s, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        fn(tf.constant([[0.0, np.nan]]))
    fn_k = tf.function(lambda s, k: dftopk(s, k))
    with pytest.raises(tf.errors.InvalidArgumentError, match="valid items"):
        fn_k(tf.zeros([1, 3]), tf.constant([4]))


def test_numpy_integer_k_is_a_static_k():
    x = tf.random.stateless_normal([2, 9], seed=[1, 1])
    np.testing.assert_array_equal(dftopk(x, np.int64(3)).numpy(), dftopk(x, 3).numpy())
    np.testing.assert_array_equal(hard_topk_mask(x, np.int32(3)).numpy(), hard_topk_mask(x, 3).numpy())
