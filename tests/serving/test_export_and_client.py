"""Serving: signatures equal the in-memory cascade, any N, warmup, atomic versions, client."""

import os

import numpy as np
import pytest
import tensorflow as tf

from serving.client import CascadeClient, ServingError
from serving.export import publish_version, raw_from_indices, write_saved_model
from serving.testing import PredictionServiceDouble, RestDouble
from tfcascade import features as F
from tfcascade.data import load_vocabularies, make_dataset
from tfcascade.training import load_model


@pytest.fixture(scope="module")
def exported(tiny_data, tiny_model_dir, tmp_path_factory):
    model = load_model(str(tiny_model_dir))
    path = str(tmp_path_factory.mktemp("export") / "sm")
    write_saved_model(model, path, str(tiny_data / "vocab"))
    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=4, shuffle=False)))
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, load_vocabularies(str(tiny_data)))
    return model, path, batch, raw


def test_serving_default_equals_in_memory_select(exported):
    model, path, batch, raw = exported
    fn = tf.saved_model.load(path).signatures["serving_default"]
    out = fn(**{k: tf.constant(v) for k, v in raw.items()})
    idx, scores = model.select(batch)
    np.testing.assert_array_equal(out["top_k_indices"].numpy(), idx.numpy())
    np.testing.assert_allclose(out["top_k_scores"].numpy(), scores.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(out["top_k_video_ids"].numpy(),
                                  np.take_along_axis(raw["video_id"], idx.numpy(), 1))


def test_stage_signatures_and_any_list_length(exported):
    model, path, batch, raw = exported
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "retrieval", "rank"}
    stage = model.stage_scores(batch)
    for name, want in zip(("retrieval", "rank"), stage):
        got = loaded.signatures[name](**{k: tf.constant(v) for k, v in raw.items()})["scores"]
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # N = 5 < K = 10 and padding (-1): only valid candidates come back, the rest is -1.
    short = {k: (v[:, :5] if k in F.ITEM_FEATURES else v) for k, v in raw.items()}
    short["video_id"] = short["video_id"].copy()
    short["video_id"][:, 4] = -1
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in short.items()})
    idx = out["top_k_indices"].numpy()
    assert idx.shape == (4, 10)
    assert np.all(np.sort(idx[:, :4], 1) == np.arange(4)) and np.all(idx[:, 4:] == -1)
    assert np.all(out["top_k_video_ids"].numpy()[:, 4:] == -1)


def test_unknown_ids_map_to_padding_index(exported):
    model, path, batch, raw = exported
    weird = {k: v.copy() for k, v in raw.items()}
    weird["user_id"][:] = 987654321  # never seen
    fn = tf.saved_model.load(path).signatures["retrieval"]
    features = dict(batch)
    features["user_id"] = tf.zeros_like(features["user_id"])
    want = model.stage_scores(features)[0]
    got = fn(**{k: tf.constant(v) for k, v in weird.items()})["scores"]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_warmup_file_parses(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path, _, raw = exported
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")))
    assert len(records) == 2
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["video_id"])[0], raw["video_id"][0])


def test_publish_version_is_numbered_and_atomic(exported, tmp_path):
    _, path, _, _ = exported
    first = publish_version(path, str(tmp_path), "cascade")
    second = publish_version(path, str(tmp_path), "cascade")
    assert first.endswith("/cascade/1") and second.endswith("/cascade/2")
    assert sorted(os.listdir(tmp_path / "cascade")) == ["1", "2"]  # no temporary folders left
    with pytest.raises(FileExistsError, match="version 2"):
        publish_version(path, str(tmp_path), "cascade", version=2)
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        publish_version(str(tmp_path), str(tmp_path / "x"), "cascade")
    assert sorted(os.listdir(tmp_path / "cascade")) == ["1", "2"]


def _request(raw, i=0):
    users = {n: raw[n][i] for n in F.USER_FEATURES}
    history = {n: raw[n][i] for n in F.HISTORY_FEATURES}
    candidates = {n: raw[n][i] for n in F.ITEM_FEATURES}
    return users, history, candidates


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_client_against_doubles(exported, protocol):
    model, path, batch, raw = exported
    double = (PredictionServiceDouble if protocol == "grpc" else RestDouble)(path)
    with double:
        client = CascadeClient("127.0.0.1", grpc_port=double.port, rest_port=double.port, timeout=10,
                               retries=2, backoff=0.01)
        out = client.predict(*_request(raw, 1), protocol=protocol)
        idx, _ = model.select(batch)
        np.testing.assert_array_equal(np.asarray(out["top_k_indices"])[0], idx.numpy()[1])
        double.model.fail_next = 2  # two outages, then success: retried transparently
        out = client.predict(*_request(raw, 1), protocol=protocol)
        np.testing.assert_array_equal(np.asarray(out["top_k_indices"])[0], idx.numpy()[1])
        double.model.fail_next = 5
        with pytest.raises(ServingError, match="gave up after 3 attempts"):
            client.predict(*_request(raw, 1), protocol=protocol)
        double.model.fail_next = 0
        wrong = CascadeClient("127.0.0.1", grpc_port=double.port, rest_port=double.port, model_name="nope",
                              retries=0)
        with pytest.raises(ServingError, match="not found|NOT_FOUND"):
            wrong.predict(*_request(raw, 1), protocol=protocol)


def test_client_input_errors_and_unreachable_server():
    users = {n: 1 for n in F.USER_FEATURES}
    history = {n: [1, 2] for n in F.HISTORY_FEATURES}
    candidates = {n: [1, 2, 3] for n in F.ITEM_FEATURES}
    client = CascadeClient("127.0.0.1", grpc_port=1, rest_port=1, timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(ValueError, match="missing input 'video_id'"):
        client.predict(users, history, {k: v for k, v in candidates.items() if k != "video_id"})
    with pytest.raises(ValueError, match="integer ids"):
        client.predict(users, history, {**candidates, "video_id": [1.5, 2.0, 3.0]})
    with pytest.raises(ValueError, match="protocol"):
        client.predict(users, history, candidates, protocol="soap")
    with pytest.raises(ServingError, match="gave up after 2 attempts"):
        client.predict(users, history, candidates, protocol="rest")
    with pytest.raises(ServingError, match="gave up after 2 attempts"):
        client.predict(users, history, candidates, protocol="grpc")
    with pytest.raises(ValueError, match="timeout"):
        CascadeClient(timeout=0)


@pytest.mark.skipif(not __import__("shutil").which("tensorflow_model_server"),
                    reason="tensorflow_model_server is not on PATH (no registry ships it for this machine)")
def test_real_tensorflow_model_server(exported, tmp_path):
    import socket
    import subprocess
    model, path, batch, raw = exported
    publish_version(path, str(tmp_path), "cascade")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen(["tensorflow_model_server", f"--port={ports[0]}", f"--rest_api_port={ports[1]}",
                             "--model_name=cascade", f"--model_base_path={tmp_path / 'cascade'}"])
    try:
        client = CascadeClient("127.0.0.1", ports[0], ports[1], timeout=5, retries=20, backoff=0.5)
        idx, _ = model.select(batch)
        for protocol in ("grpc", "rest"):
            out = client.predict(*_request(raw, 0), protocol=protocol)
            np.testing.assert_array_equal(np.asarray(out["top_k_indices"])[0], idx.numpy()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_export_cli_publishes_numbered_versions(tiny_data, tiny_model_dir, tmp_path, capsys):
    from tfcascade.cli.main import main

    argv = ["export", "--model-dir", str(tiny_model_dir), "--data", str(tiny_data),
            "--serving-dir", str(tmp_path), "--model-name", "ranker", "--k", "5"]
    assert main(argv) == 0
    assert "ranker/1" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "ranker")) == ["1"]
    loaded = tf.saved_model.load(str(tmp_path / "ranker" / "1"))
    from tensorflow_serving.apis import prediction_log_pb2

    warmup = tmp_path / "ranker" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    record = next(iter(tf.data.TFRecordDataset(str(warmup)))).numpy()
    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    out = loaded.signatures["serving_default"](**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    assert out["top_k_indices"].shape == (1, 5)
    capsys.readouterr()
    assert main(argv + ["--version", "1"]) == 1  # one line, no traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfcascade export: error:") and "version 1" in err and "\n" not in err


def test_cascade_with_a_tarq_stage_exports_and_serves_identically(tiny_data, tiny_tarq_model_dir, tmp_path):
    from tfcascade.models.tarq import TARQ

    model = load_model(str(tiny_tarq_model_dir))
    assert isinstance(model.stage_models[1], TARQ)
    path = str(tmp_path / "sm")
    write_saved_model(model, path, str(tiny_data / "vocab"))
    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=3, shuffle=False)))
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, load_vocabularies(str(tiny_data)))
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    idx, scores = model.select(batch)
    np.testing.assert_array_equal(out["top_k_indices"].numpy(), idx.numpy())
    np.testing.assert_allclose(out["top_k_scores"].numpy(), scores.numpy(), rtol=1e-5, atol=1e-6)
    rank = loaded.signatures["rank"](**{k: tf.constant(v) for k, v in raw.items()})["scores"]
    np.testing.assert_allclose(rank.numpy(), model.stage_scores(batch)[1].numpy(), rtol=1e-5, atol=1e-6)
