"""A model and another preprocessing's data are refused everywhere they meet; empty splits fail early."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf

from tfcascade.cli.main import main
from tfcascade.data.fingerprint import DataMismatchError
from tfcascade.data.tfdata import EmptySplitError, load_metadata
from tfcascade.training import evaluate, train


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    """Another simulation (seed 6) preprocessed: same schema, other vocabularies."""
    from tfcascade.beam.preprocess import run_preprocess
    from tfcascade.data import simulate

    root = tmp_path_factory.mktemp("other")
    simulate(root / "raw", "tiny", seed=6)
    run_preprocess(str(root / "raw"), str(root / "data"))
    return root / "data"


def test_the_model_keeps_its_data_fingerprint(tiny_model_dir, tiny_data, other_data):
    import json

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["data_fingerprint"] == load_metadata(tiny_data)["fingerprint"]
    assert load_metadata(other_data)["fingerprint"] != config["data_fingerprint"]


def test_evaluate_refuses_another_preprocessing(tiny_model_dir, other_data):
    with pytest.raises(DataMismatchError, match="evaluate: data=.* has vocabulary fingerprint sha256:"):
        evaluate(str(tiny_model_dir), str(other_data))


def test_cli_evaluate_and_export_refuse_in_one_line(tiny_model_dir, other_data, tmp_path, capsys):
    assert main(["evaluate", "--model-dir", str(tiny_model_dir), "--data", str(other_data)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfcascade evaluate: error: evaluate: data=") and "\n" not in err
    assert main(["export", "--model-dir", str(tiny_model_dir), "--data", str(other_data),
                 "--serving-dir", str(tmp_path / "serving")]) == 1
    assert "export: data=" in capsys.readouterr().err and not (tmp_path / "serving").exists()


def test_a_rerun_into_a_model_dir_of_other_data_is_refused(tiny_model_dir, other_data, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    shutil.copy(tiny_model_dir / "config.json", model_dir / "config.json")
    with pytest.raises(DataMismatchError, match="resume training"):
        train(str(other_data), str(model_dir), loss="bce", batch_size=64, verbose=0)


def test_the_tfx_validator_refuses_another_preprocessing(tiny_model_dir, other_data, tfx_layout):
    from tfcascade.components.cascade_evaluation import evaluate_cascade

    model_uri, examples = tfx_layout(tiny_model_dir, other_data)
    with pytest.raises(DataMismatchError, match="JointRecallValidator"):
        evaluate_cascade(model_uri=str(model_uri), examples_uri=str(examples), k=10, qs=(20, 10),
                         slice_features=())


def test_training_fails_before_its_first_step_on_an_empty_split(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for path in (data / "eval").iterdir():
        path.unlink()
    with tf.io.TFRecordWriter(str(data / "eval" / "part-00000-of-00001.tfrecord.gz"), "GZIP"):
        pass
    with pytest.raises(EmptySplitError, match="the eval split .* has no example"):
        train(str(data), str(tmp_path / "m"), loss="bce", batch_size=64, verbose=0)
    assert not (tmp_path / "m" / "config.json").exists()
