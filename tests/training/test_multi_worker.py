"""Two TensorFlow workers on 127.0.0.1 under TF_CONFIG (MultiWorkerMirroredStrategy), and what
a kill of one of them does."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tfcascade.training import load_model, train
from tfcascade.training.distribution import (
    cluster_from_environment,
    free_loopback_ports,
    strategy_from_environment,
)


@pytest.mark.slow
def test_two_workers_train_what_one_worker_trains(tiny_data, tmp_path):
    from tfcascade.data import make_dataset

    ports = free_loopback_ports(2)
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
    # The logged training metrics are the cluster's (not summed over the workers: Keras' default
    # reported 1.06 here), over the same global batches as one worker's.
    assert 0.0 <= metrics["last_epoch"]["joint_recall"] <= 1.0
    assert metrics["last_epoch"]["joint_recall"] == pytest.approx(single["last_epoch"]["joint_recall"], abs=0.1)
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


def _worker(tiny_data, cluster, index, model_dir, log, *args):
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "tfcascade", "train", "--data", str(tiny_data), "--loss", "bce",
                             "--model-dir", str(model_dir), *args], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(900, method="signal")  # the outer bound; every wait below has its own
def test_a_killed_worker_is_recovered_by_restarting_the_cluster(tiny_data, tmp_path):
    """kill -9 of worker-1 of two, after the first backup. Measured (TF 2.21, loopback): the
    survivor's collective is aborted once the coordination service misses the dead worker's
    heartbeats (10 s) and it exits with an error ("The following tasks are unhealthy (stopped
    sending heartbeats)"), ~9 s after the kill, or sooner when its next collective fails to
    reach the dead peer ("Failed to connect to remote host: Connection refused"); restarting
    only the killed worker does not rejoin
    (the survivor aborts: "unexpectedly tried to connect with a different incarnation", and the
    restarted worker then waits for its dead peer: still waiting 240 s later). Restarting both
    resumes the chief's backup in the shared model_dir."""
    model_dir = tmp_path / "run"  # shared by both workers, as on GCS / NFS
    epochs, steps_per_epoch = 6, 7  # the tiny preset's 200 train requests at batch 32
    args = ["--batch-size", "32", "--epochs", str(epochs)]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_loopback_ports(2)]}
    logs = [open(tmp_path / f"w{i}.log", "wb") for i in range(4)]  # noqa: SIM115 (closed below)
    procs = []

    def output(i):
        return (tmp_path / f"w{i}.log").read_text(errors="replace")[-3000:]

    try:
        procs = [_worker(tiny_data, cluster, i, model_dir, logs[i], *args) for i in range(2)]
        deadline = time.monotonic() + 480
        while not ((model_dir / "backup").is_dir() and _run_steps(model_dir) >= steps_per_epoch):
            assert all(p.poll() is None for p in procs), output(0) + output(1)  # must not end before the kill
            assert time.monotonic() < deadline, "no backup within 480 s"
            time.sleep(0.1)
        procs[1].kill()
        procs[1].wait()
        killed = time.monotonic()
        survivor = procs[0].wait(timeout=120)  # bounded: a hang fails here
        survived_s = time.monotonic() - killed
        # Which check notices first is a race: the coordination service's missed heartbeats, or the
        # survivor's next collective failing to reach the dead peer.
        lost_peer = ("stopped sending heartbeats", "Failed to connect to remote host")
        assert survivor == 1 and any(m in output(0) for m in lost_peer), output(0)
        assert survived_s < 60, survived_s  # the coordination service's heartbeat timeout is 10 s
        prior = _run_steps(model_dir)
        assert steps_per_epoch <= prior < epochs * steps_per_epoch
        # The documented recovery: restart the whole cluster with the same command.
        procs += [_worker(tiny_data, cluster, i, model_dir, logs[2 + i], *args) for i in range(2)]
        for p in procs[2:]:
            p.wait(timeout=480)
        assert [p.returncode for p in procs[2:]] == [0, 0], output(2) + output(3)
    finally:
        for p in procs:  # bounded: never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["num_workers"] == 2
    assert metrics["steps"] == epochs * steps_per_epoch and metrics["steps_this_run"] == epochs * steps_per_epoch - prior
    assert not (model_dir / "backup").exists() and not list(model_dir.glob(".worker-*"))
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.timeout(600, method="signal")
def test_workers_that_would_resume_different_backups_are_refused(tiny_data, tmp_path):
    """Each worker given its own model_dir, and only the chief's holding an interrupted run's
    backup: the chief would resume it and worker-1 start over, all-reducing updates of two
    different models. Both refuse, naming the steps each would start from."""
    from tfcascade._keras import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated preemption")

    with pytest.raises(RuntimeError, match="preemption"):  # one epoch (7 steps) backed up, then killed
        train(str(tiny_data), str(tmp_path / "w0"), loss="bce", batch_size=32, epochs=2, callbacks=[Crash()], verbose=0)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_loopback_ports(2)]}
    logs = [open(tmp_path / f"w{i}.log", "wb") for i in range(2)]  # noqa: SIM115 (closed below)
    procs = []
    try:
        procs = [_worker(tiny_data, cluster, i, tmp_path / f"w{i}", logs[i], "--batch-size", "32", "--epochs", "2")
                 for i in range(2)]
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"w{i}.log").read_text(errors="replace") for i in range(2)]
    assert [p.returncode for p in procs] == [1, 1], outputs
    for out in outputs:
        assert "the workers would resume from different steps [7, 0] (worker order): every worker must be given the " \
               "same model_dir" in out, out[-2000:]
    assert (tmp_path / "w0" / "backup").is_dir()  # the interrupted run is left as it was


def _run_steps(model_dir) -> int:
    try:
        return int(json.loads((model_dir / "run.json").read_text())["steps"])
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return 0


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
