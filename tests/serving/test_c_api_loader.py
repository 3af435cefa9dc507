"""The C++ SavedModel loader (TF C API, as in TF Serving) serves what tf.saved_model.load does."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfcascade.data import load_vocabularies, make_dataset
from tfcascade.serving import c_api_runner as car
from tfcascade.serving.export import raw_from_indices, write_saved_model
from tfcascade.training import load_model

pytestmark = pytest.mark.skipif(
    not car.compiler_available(),
    reason="no C compiler (gcc/cc or $CC) on PATH: the TensorFlow C API runner cannot be built")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> str:
    return car.compile_runner(str(tmp_path_factory.mktemp("c_api_build")))


SIGNATURES = {2: ("serving_default", "retrieval", "rank", "recommend"),
              3: ("serving_default", "retrieval", "prerank", "rank", "recommend")}


@pytest.fixture(scope="module", params=[2, 3], ids=["2-stage", "3-stage"])
def exported(request, tiny_data, tiny_model_dir, tmp_path_factory):
    """The trained two-stage tiny model, and an (untrained) three-stage cascade on the same data."""
    from tfcascade.data import load_metadata
    from tfcascade.models import build_cascade

    model = (load_model(str(tiny_model_dir)) if request.param == 2 else
             build_cascade(load_metadata(str(tiny_data)), stages=3, loss="bce", seed=0))
    path = str(tmp_path_factory.mktemp("c_api_export") / "sm")
    write_saved_model(model, path, str(tiny_data / "vocab"))
    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=4, shuffle=False)))
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, load_vocabularies(str(tiny_data)))
    return path, raw, tf.saved_model.load(path), request.param


def _compare_with_tf_saved_model_load(runner, exported, name: str) -> dict:
    path, raw, loaded, _ = exported
    specs, _ = car.signature_tensors(path, name)
    request = {key: raw[key] for key in specs if key in raw}  # e.g. recommend: no exclude_video_id
    defaults = car.signature_defaults(path, name)
    left_out = set(specs) - set(request)
    assert left_out <= set(defaults), (
        f"{name}: inputs {sorted(left_out)} have no request value and no SignatureDef default "
        f"(its defaults: {sorted(defaults)})")
    got = car.run_signature(runner, path, name, request)  # the runner feeds the defaults
    # A loaded Python signature needs every input: give it the SignatureDef's defaults.
    reference = {**request, **{key: defaults[key] for key in left_out}}
    want = loaded.signatures[name](**{k: tf.constant(v) for k, v in reference.items()})
    assert set(got) == set(want), name
    for key, value in want.items():
        value = value.numpy()
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, (name, key)
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}/{key}")
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name}/{key}")
    return got


def test_every_signature_equals_tf_saved_model_load(runner, exported):
    for name in SIGNATURES[exported[3]]:
        got = _compare_with_tf_saved_model_load(runner, exported, name)
        if name == "serving_default":
            assert got["top_k_scores"].shape == (4, 10) and np.isfinite(got["top_k_scores"]).any()
        if name == "recommend":
            assert "exclude_video_id" in car.signature_defaults(exported[0], name)
            assert all(len(set(row)) == 10 for row in got["top_k_video_ids"].tolist())
            assert np.all(got["top_k_video_ids"] >= 0)


def test_every_exported_signature_is_compared(exported):
    assert set(exported[2].signatures) == set(SIGNATURES[exported[3]])


def test_optional_input_is_fed_from_signature_defaults(runner, tmp_path):
    module = tf.Module()
    module.weights = tf.Variable([1.0, 2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int64, name="drop")])
    def fn(x, drop=tf.constant([7, 8], tf.int64)):
        return {"y": x * module.weights, "dropped": tf.reduce_sum(drop)}

    path = str(tmp_path / "sm")
    tf.saved_model.save(module, path, signatures={"f": fn})
    assert set(car.signature_defaults(path, "f")) == {"drop"}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = car.run_signature(runner, path, "f", {"x": x})
    np.testing.assert_array_equal(out["y"], x * np.array([1, 2, 3], np.float32))
    assert out["dropped"] == 15 and out["dropped"].dtype == np.int64
    out = car.run_signature(runner, path, "f", {"x": x, "drop": np.array([1, 2, 3])})
    assert out["dropped"] == 6
    with pytest.raises(TypeError, match="'x'.*float32"):
        car.run_signature(runner, path, "f", {"x": x.astype(np.int64) + 0.5j})
    with pytest.raises(ValueError, match=r"'x'.*shape \[2, 4\].*\[\?, 3\]"):
        car.run_signature(runner, path, "f", {"x": np.zeros((2, 4), np.float32)})


def test_missing_saved_model_gives_a_clear_error(runner, tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no SavedModel at .*no_such_model"):
        car.run_signature(runner, missing, "serving_default", {})
    with pytest.raises(car.CApiRunnerError, match="cannot load the SavedModel .*no_such_model") as err:
        car.run_tensors(runner, missing, {}, ["StatefulPartitionedCall:0"])
    assert "Could not find SavedModel" in str(err.value) and err.value.stderr


def test_wrong_names_are_refused(runner, exported):
    path, raw, _, _ = exported
    with pytest.raises(ValueError, match="unknown input 'user_idd' for signature 'rank'"):
        car.run_signature(runner, path, "rank", {**raw, "user_idd": raw["user_id"]})
    without = {k: v for k, v in raw.items() if k != "video_id"}
    with pytest.raises(ValueError, match="missing input 'video_id'.*no default"):
        car.run_signature(runner, path, "rank", without)
    with pytest.raises(KeyError, match="no signature 'nope'.*serving_default"):
        car.run_signature(runner, path, "nope", raw)
    with pytest.raises(car.CApiRunnerError, match="no operation 'bogus_tensor'"):
        car.run_tensors(runner, path, {"bogus_tensor:0": raw["user_id"]}, ["StatefulPartitionedCall:0"])


def test_compiled_runner_is_reused(runner):
    before = os.stat(runner).st_mtime_ns
    assert car.compile_runner(os.path.dirname(runner)) == runner
    assert os.stat(runner).st_mtime_ns == before  # same source and command: not rebuilt


def test_compile_errors_name_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler reachable
    monkeypatch.delenv("CC", raising=False)
    assert not car.compiler_available()
    with pytest.raises(car.CApiRunnerError, match="no C compiler found on PATH.*gcc"):
        car.compile_runner(str(tmp_path / "build"))
    assert not os.path.exists(tmp_path / "build" / car.BINARY_NAME)
