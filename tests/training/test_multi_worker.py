"""Two TensorFlow workers on 127.0.0.1 under TF_CONFIG (MultiWorkerMirroredStrategy)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tfcascade.training import load_model, train
from tfcascade.training.distribution import cluster_from_environment, strategy_from_environment


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_what_one_worker_trains(tiny_data, tmp_path):
    from tfcascade.data import make_dataset

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["--data", str(tiny_data), "--loss", "bce", "--batch-size", "64", "--epochs", "2"]
    procs = []
    try:
        for i in range(2):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
            procs.append(subprocess.Popen([sys.executable, "-m", "tfcascade", "train", *args, "--model-dir",
                                           str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=480)[0] for p in procs]
    finally:
        for p in procs:  # bounded: never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "training on 2 workers (MultiWorkerMirroredStrategy), this one is worker-0 (chief)" in outputs[0]
    metrics = json.loads((tmp_path / "w0" / "metrics.json").read_text())
    assert metrics["strategy"] == "MultiWorkerMirroredStrategy" and metrics["num_workers"] == 2
    assert not os.listdir(tmp_path / "w1")  # the other worker's scratch is gone
    single = train(str(tiny_data), str(tmp_path / "one"), loss="bce", batch_size=64, epochs=2, verbose=0)
    assert metrics["steps"] == single["steps"] and single["num_workers"] == 1
    # Same global batches and steps. The all-reduced gradient is the sum of the two workers'
    # batch means (twice one worker's), which Adam's update is invariant to; what is left is
    # float noise, which Adam's sign-like first steps amplify on tiny gradients. So: the two
    # runs end far closer to each other than to where they started (measured 5.8 vs 52).
    from tfcascade.data import load_metadata
    from tfcascade.models import build_cascade

    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=8, shuffle=False)))
    init = build_cascade(load_metadata(str(tiny_data)), stages=2, loss="bce", seed=0)
    two, one, start = (np.stack([s.numpy() for s in model.stage_scores(batch)])
                       for model in (load_model(str(tmp_path / "w0")), load_model(str(tmp_path / "one")), init))
    assert np.linalg.norm(two - one) < 0.25 * np.linalg.norm(one - start)
    assert np.corrcoef(two.ravel(), one.ravel())[0, 1] > 0.98


def test_tf_config_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_from_environment() == ({}, {}) and strategy_from_environment() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker"}}))
    assert strategy_from_environment() is None  # one worker: no cluster to coordinate
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        cluster_from_environment()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"], "ps": ["c:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="parameter servers"):
        strategy_from_environment()
