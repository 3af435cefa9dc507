"""Serving: signatures equal the in-memory cascade, any N, warmup, atomic versions, client."""

import datetime
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcascade import features as F
from tfcascade.data import load_vocabularies, make_dataset
from tfcascade.serving.client import CascadeClient, ServingError
from tfcascade.serving.export import publish_version, raw_from_indices, write_saved_model
from tfcascade.serving.item_table import items_from_csv
from tfcascade.serving.testing import PredictionServiceDouble, RestDouble
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
    assert set(loaded.signatures) == {"serving_default", "recommend", "retrieval", "rank"}
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


def test_warmup_requests_cover_every_signature_and_run(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path, _, raw = exported
    loaded = tf.saved_model.load(path)
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")))
    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request for r in records]
    assert len(requests) == 2 * len(loaded.signatures)
    assert {r.model_spec.signature_name for r in requests} == set(loaded.signatures)
    for request in requests:  # each is a complete, real request of its signature
        fn = loaded.signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(fn.structured_input_signature[1])
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    first = next(r for r in requests if r.model_spec.signature_name == "serving_default")
    np.testing.assert_array_equal(tf.make_ndarray(first.inputs["video_id"])[0], raw["video_id"][0])


def test_export_without_warmup_examples_fails(tiny_model_dir, tiny_data, tmp_path):
    model = load_model(str(tiny_model_dir))
    with pytest.raises(ValueError, match="cannot build warmup requests from the eval examples of"):
        write_saved_model(model, str(tmp_path / "sm"), str(tiny_data / "vocab"), examples=str(tmp_path),
                          recommend=False)
    assert not (tmp_path / "sm").exists()


def _recommend_inputs(raw, exclude=None):
    inputs = {k: tf.constant(raw[k]) for k in F.USER_FEATURES + F.HISTORY_FEATURES}
    b = len(raw["user_id"])
    inputs["exclude_video_id"] = tf.constant(np.zeros((b, 0), np.int64) if exclude is None else exclude)
    return inputs


def test_recommend_serves_the_cascade_over_the_training_items(exported, tiny_data):
    from tfcascade.serving.item_table import items_from_examples

    model, path, batch, raw = exported
    vocab = load_vocabularies(str(tiny_data))
    items = items_from_examples(str(tiny_data), vocab)
    assert len(items) > 100 and len(set(items.video_ids.tolist())) == len(items)
    fn = tf.saved_model.load(path).signatures["recommend"]
    out = fn(**_recommend_inputs(raw))
    rows, scores = model.recommend(batch, items.indices)
    np.testing.assert_array_equal(out["top_k_video_ids"].numpy(), items.video_ids[rows.numpy()])
    np.testing.assert_allclose(out["top_k_scores"].numpy(), scores.numpy(), rtol=1e-5, atol=1e-6)
    ids = out["top_k_video_ids"].numpy()
    assert ids.shape == (4, model.k) and all(len(set(r)) == len(r) for r in ids.tolist())
    # exclude: the first two of each row never come back; -1 pads the exclusion list
    exclude = np.concatenate([ids[:, :2], -np.ones((4, 1), np.int64)], 1)
    again = fn(**_recommend_inputs(raw, exclude))["top_k_video_ids"].numpy()
    assert not any(np.isin(a, e).any() for a, e in zip(again, ids[:, :2]))
    rows, _ = model.recommend(batch, items.indices, corpus_keys=tf.constant(items.video_ids),
                              exclude=tf.constant(exclude))
    np.testing.assert_array_equal(again, items.video_ids[rows.numpy()])


def test_recommend_from_an_items_file(exported, tiny_data, tmp_path):
    model, _, _, raw = exported
    vocab = load_vocabularies(str(tiny_data))
    chosen = vocab["video_id"][:15]
    uploaded = [1_700_000_000 + 3_671 * i for i in range(len(chosen))]  # seconds, as RecFlow's
    lines = ["video_id,author_id,category_level_one,category_level_two,upload_type,upload_timestamp"]
    lines += [f"{v},{vocab['author_id'][0]},{vocab['category_level_one'][0]},{vocab['category_level_two'][0]},"
              f"{vocab['upload_type'][0]},{t}" for v, t in zip(chosen, uploaded)]
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    # upload_timestamp stands for the three upload time columns, read in UTC.
    explicit = [lines[0].replace("upload_timestamp", "upload_weekday,upload_hour,upload_minute")]
    for line, t in zip(lines[1:], uploaded):
        when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        explicit.append(line.rsplit(",", 1)[0] + f",{when.weekday()},{when.hour},{when.minute}")
    (tmp_path / "explicit.csv").write_text("\n".join(explicit) + "\n")
    from_timestamps = items_from_csv(str(tmp_path / "items.csv"), vocab)
    from_columns = items_from_csv(str(tmp_path / "explicit.csv"), vocab)
    for name in F.ITEM_FEATURES:
        np.testing.assert_array_equal(from_timestamps.indices[name], from_columns.indices[name])
    assert len(set(from_columns.indices["upload_hour"].tolist())) > 1
    path = str(tmp_path / "sm")
    write_saved_model(model, path, str(tiny_data / "vocab"), items=str(tmp_path / "items.csv"), k=3)
    out = tf.saved_model.load(path).signatures["recommend"](**_recommend_inputs(raw))
    assert out["top_k_video_ids"].shape == (4, 3) and set(out["top_k_video_ids"].numpy().ravel()) <= set(chosen)
    (tmp_path / "bad.csv").write_text(lines[0] + "\n" + "1,2,x,4,5,6\n")
    with pytest.raises(ValueError, match=r"bad.csv line 2: category_level_one='x' is not an integer id"):
        write_saved_model(model, str(tmp_path / "sm2"), str(tiny_data / "vocab"), items=str(tmp_path / "bad.csv"))
    (tmp_path / "dup.csv").write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ValueError, match=f"holds video_id {chosen[0]} more than once"):
        write_saved_model(model, str(tmp_path / "sm3"), str(tiny_data / "vocab"), items=str(tmp_path / "dup.csv"))


def test_bad_requests_fail_at_the_boundary_naming_the_input(exported):
    _, path, _, raw = exported
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    cases = [
        ({"user_id": raw["user_id"] * 0 - 2}, "input user_id holds an id < -1"),
        ({"video_id": np.where(raw["video_id"] > 0, -7, -1)}, "input video_id holds an id < -1"),
        ({"author_id": raw["author_id"][:, :3]}, "inputs video_id and author_id must have the same shape"),
        ({"hist_author_id": raw["hist_author_id"][:, :5]},
         "inputs hist_video_id and hist_author_id must have the same shape"),
        ({f: raw[f][:2] for f in F.ITEM_FEATURES}, "inputs user_id and video_id must have the same batch size"),
    ]
    for change, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            fn(**{k: tf.constant(v) for k, v in {**raw, **change}.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match="exclude_video_id must have the batch size"):
        loaded.signatures["recommend"](**_recommend_inputs(raw, np.ones((2, 3), np.int64)))
    # N = 0 candidates: a full-width answer of padding.
    empty = {k: (v[:, :0] if k in F.ITEM_FEATURES else v) for k, v in raw.items()}
    out = fn(**{k: tf.constant(v) for k, v in empty.items()})
    assert np.all(out["top_k_video_ids"].numpy() == -1) and out["top_k_video_ids"].shape == (4, 10)
    assert np.all(out["top_k_indices"].numpy() == -1) and np.all(np.isneginf(out["top_k_scores"].numpy()))


def test_export_refuses_k_outside_one_to_q_last(exported, tiny_data, tmp_path):
    model, _, _, _ = exported
    for k in (0, -3, model.qs[-1] + 1):
        with pytest.raises(ValueError, match=f"k must be in 1..{model.qs[-1]}"):
            write_saved_model(model, str(tmp_path / "sm"), str(tiny_data / "vocab"), k=k)
    assert not (tmp_path / "sm").exists()


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
    for k in ("0", "21"):
        assert main(argv[:-1] + [k]) == 2  # usage error, before anything is written
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tfcascade export: error: --k {k}: k must be in 1..") and "\n" not in err
    assert sorted(os.listdir(tmp_path / "ranker")) == ["1"]
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


@pytest.mark.parametrize("name", ["example_request.json", "example_recommend_request.json"])
def test_shipped_example_requests_are_served(exported, name):
    import json
    import urllib.request
    from pathlib import Path

    _, path, _, _ = exported
    body = (Path(__file__).resolve().parents[2] / "deploy" / name).read_bytes()
    with RestDouble(path) as double:
        url = f"http://127.0.0.1:{double.port}/v1/models/cascade:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
            payload = json.loads(response.read().decode().replace("-Infinity", "null"))
    rows = payload.get("predictions") or [dict(zip(payload["outputs"], v)) for v in
                                          zip(*payload["outputs"].values())]
    assert len(rows) == 1 and len(rows[0]["top_k_video_ids"]) == 10


def test_publish_removes_what_killed_publishes_left(exported, tmp_path):
    import socket
    import subprocess

    _, path, _, _ = exported
    base = tmp_path / "cascade"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    leftovers = {f".tmp-1-{host}-{dead.pid}-0123abcd": True,      # its process is gone
                 f".tmp-1-{host}-{os.getpid()}-89abcdef": False,   # a publish still running
                 ".tmp-1-otherhost-1-fedcba98": False}             # another host's, recent
    for name in leftovers:
        (base / name).mkdir(parents=True)
    assert publish_version(path, str(tmp_path), "cascade").endswith("/cascade/1")
    assert sorted(os.listdir(base)) == sorted(["1"] + [n for n, stale in leftovers.items() if not stale])
    old = base / ".tmp-1-otherhost-1-fedcba98"
    os.utime(old, (0, 0))  # older than an hour: removed whoever left it
    publish_version(path, str(tmp_path), "cascade")
    assert not old.exists() and (base / f".tmp-1-{host}-{os.getpid()}-89abcdef").exists()


def test_stage_signatures_are_named_after_the_spec(tiny_data, tmp_path):
    from tfcascade.data import load_metadata
    from tfcascade.models import CascadeSpec, build_cascade
    from tfcascade.serving.export import SIGNATURE_STAGE_NAMES

    assert SIGNATURE_STAGE_NAMES == {2: ("retrieval", "rank"), 3: ("retrieval", "prerank", "rank")}
    spec = CascadeSpec(("dssm", "din"), ("recall", "rerank"), (25, 12), 5)
    model = build_cascade(load_metadata(str(tiny_data)), spec, loss="bce", seed=0)
    path = write_saved_model(model, str(tmp_path / "sm"), str(tiny_data / "vocab"), recommend=False)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "recall", "rerank"}
    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=2, shuffle=False)))
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, load_vocabularies(str(tiny_data)))
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    assert out["top_k_indices"].shape == (2, 5)  # the spec's k
    clash = build_cascade(load_metadata(str(tiny_data)), CascadeSpec.default(2, stage_names=("recall", "recommend")),
                          loss="bce", seed=0)
    with pytest.raises(ValueError, match="stage name 'recommend' gives a signature name already taken"):
        write_saved_model(clash, str(tmp_path / "clash"), str(tiny_data / "vocab"))
