"""A parameter-server cluster on 127.0.0.1 under TF_CONFIG (ParameterServerStrategy): a chief that
coordinates, two workers and two parameter servers, each a `tfcascade train` process; the
partitioner that splits tables of many ids across the parameter servers; what is refused."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from tfcascade._keras import keras
from tfcascade.training import TrainConfig, load_model, train
from tfcascade.training.distribution import (
    DEFAULT_MIN_SHARD_ROWS,
    EmbeddingPartitioner,
    free_loopback_ports,
    run_server,
    serves_cluster,
    strategy_from_environment,
)
from tfcascade.training.trainer import _refuse_batch_callbacks, _require_parameter_server_options

PS_DEVICES = [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(2)]




class _Cluster:
    """``tfcascade train`` processes of one TF_CONFIG cluster (1 chief, 2 workers, 2 ps) on
    loopback, each logging to its own file; every process still running is killed on exit."""

    def __init__(self, tmp_path, args):
        ports = free_loopback_ports(5)
        self.spec = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
                     "ps": [f"127.0.0.1:{p}" for p in ports[3:]]}
        self.tmp_path, self.args, self.procs, self.logs = tmp_path, list(args), {}, []

    def start(self, kind, index, name=None, *extra):
        name = name or f"{kind}-{index}"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": self.spec, "task": {"type": kind, "index": index}})}
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed on exit)
        self.logs.append(log)
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "tfcascade", "train", *self.args, *extra], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def servers(self):
        for kind in ("ps", "worker"):
            for index in range(2):
                self.start(kind, index)

    def output(self, name):
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs.values():  # bounded: never leave a task behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def _masked_scores(model, batch):
    """Both stages' scores of the batch's real (unmasked) items."""
    scores = np.stack([s.numpy() for s in model.stage_scores(batch)])
    return scores[:, batch["mask"].numpy() > 0]


@pytest.mark.slow
@pytest.mark.timeout(600, method="signal")  # the outer bound; every wait below has its own
def test_a_parameter_server_cluster_trains_partitions_tables_and_matches_one_process(tiny_data, tmp_path):
    from tfcascade.data import load_metadata, make_dataset
    from tfcascade.models import build_cascade
    from tfcascade.training import evaluate_model

    model_dir = tmp_path / "pss"
    # 512 rows per shard at least: the 1,952-id video tables split in two, every other table
    # (201 authors at most) and every dense kernel (128 rows at most) stays whole.
    # Keras' initialisation: its small weights let 20 steps of training dominate the scores, which
    # the comparison with one process below needs (PyTorch's N(0, 1) embeddings, the default,
    # would still dominate them: the untrained model's scores then correlate 0.66 with the trained).
    args = ["--data", str(tiny_data), "--loss", "bce", "--batch-size", "64", "--epochs", "2", "--steps-per-epoch",
            "10", "--ps-min-shard-rows", "512", "--initialization", "keras", "--model-dir", str(model_dir)]
    with _Cluster(tmp_path, args) as cluster:
        cluster.servers()
        chief = cluster.start("chief", 0)
        chief.wait(timeout=420)
        assert chief.returncode == 0, cluster.output("chief-0")[-3000:]
        for name in ("ps-0", "ps-1", "worker-0", "worker-1"):  # they serve until killed
            assert cluster.procs[name].poll() is None, cluster.output(name)[-2000:]
            kind, index = name.split("-")
            assert re.search(fr"serving {kind}-{index} of a parameter-server cluster \(1 chief, 2 workers, 2 parameter "
                             fr"servers\) on 127\.0\.0\.1:\d+ until killed", cluster.output(name))
    assert ("training on 2 workers and 2 parameter servers (ParameterServerStrategy), this one is chief-0 "
            "(coordinator)") in cluster.output("chief-0")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["num_workers"], metrics["num_parameter_servers"]) == (
        "ParameterServerStrategy", 2, 2)
    assert metrics["steps"] == 20 and metrics["steps_this_run"] == 20 and metrics["resumed"] is False
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"
    assert not (model_dir / "backup").exists() and (model_dir / "checkpoints" / "final.index").exists()
    # Both stages' video tables are split in two, one shard on each parameter server (which server
    # holds the first shard follows the round-robin over the variables made before); nothing else is.
    assert {name: sorted(devices) for name, devices in metrics["sharded_variables"].items()} == {
        f"cascade_model/{stage}/emb_video_id/embeddings": PS_DEVICES for stage in ("ranking_din", "retrieval_dssm")}
    # The chief's metrics are the written model's.
    assert evaluate_model(load_model(str(model_dir)), str(tiny_data))["joint_recall"] == pytest.approx(
        metrics["joint_recall"])

    # One process, same options and steps. The cluster's updates are asynchronous (each step is
    # one worker's batch applied to whatever the parameter servers hold then, so the order and
    # staleness of updates vary from run to run) and the split tables are initialised shard by
    # shard (other random values than one whole table). Measured in three cluster runs: joint
    # recall 0.210, 0.195, 0.239 against 0.211 in one process and 0.087 untrained; the scores'
    # correlation with the one-process run's 0.75, 0.57, 0.74 (two cluster runs correlate as much
    # with each other), the untrained model's -0.18. So: the same joint recall within 0.08 (about
    # 3.5 standard deviations of the cluster runs, less than the 0.12 that training adds), both
    # above the untrained model's, and scores correlated far more than the untrained model's.
    # Staleness grows with load: with the 2 cores shared by another 2-thread job, one cluster run
    # reached 0.137 (one process 0.205, untrained 0.099), hence the smaller margin for the cluster.
    single = train(str(tiny_data), str(tmp_path / "one"), TrainConfig(loss="bce", batch_size=64, epochs=2,
                                                                       steps_per_epoch=10, initialization="keras"),
                   verbose=0)
    batch = next(iter(make_dataset(str(tiny_data), "eval", batch_size=100, shuffle=False)))
    initial = build_cascade(load_metadata(str(tiny_data)), stages=2, loss="bce", seed=0, initialization="keras")
    cluster_scores, one_scores, untrained = (_masked_scores(model, batch) for model in (
        load_model(str(model_dir)), load_model(str(tmp_path / "one")), initial))
    untrained_recall = evaluate_model(initial, str(tiny_data))["joint_recall"]
    assert abs(metrics["joint_recall"] - single["joint_recall"]) < 0.08, (metrics["joint_recall"], single["joint_recall"])
    assert single["joint_recall"] > untrained_recall + 0.05, (single["joint_recall"], untrained_recall)
    assert metrics["joint_recall"] > untrained_recall + 0.02, (metrics["joint_recall"], untrained_recall)
    correlation = np.corrcoef(cluster_scores.ravel(), one_scores.ravel())[0, 1]
    untrained_correlation = np.corrcoef(untrained.ravel(), one_scores.ravel())[0, 1]
    assert correlation > max(0.4, untrained_correlation + 0.4), (correlation, untrained_correlation)


@pytest.mark.slow
@pytest.mark.timeout(600, method="signal")
def test_a_killed_chief_resumes_from_its_backup_on_the_running_servers(tiny_data, tmp_path):
    """kill -9 of the chief after its first backup; the workers and parameter servers keep
    serving, and a new chief with the same command resumes the backup (Keras BackupAndRestore
    works under ParameterServerStrategy in TF 2.21, at epoch ends)."""
    model_dir = tmp_path / "pss"
    epochs, steps_per_epoch = 4, 4
    args = ["--data", str(tiny_data), "--loss", "bce", "--batch-size", "64", "--epochs", str(epochs),
            "--steps-per-epoch", str(steps_per_epoch), "--model-dir", str(model_dir)]
    with _Cluster(tmp_path, args) as cluster:
        cluster.servers()
        chief = cluster.start("chief", 0)
        deadline = time.monotonic() + 420
        while not ((model_dir / "backup").is_dir() and _run_steps(model_dir) >= steps_per_epoch):
            assert chief.poll() is None, cluster.output("chief-0")[-3000:]  # must not end before the kill
            assert time.monotonic() < deadline, "no backup within 420 s"
            time.sleep(0.1)
        chief.kill()
        chief.wait()
        prior = _run_steps(model_dir)
        assert steps_per_epoch <= prior < epochs * steps_per_epoch
        assert all(cluster.procs[name].poll() is None for name in ("ps-0", "ps-1", "worker-0", "worker-1"))
        again = cluster.start("chief", 0, "chief-0-again")
        again.wait(timeout=420)
        assert again.returncode == 0, cluster.output("chief-0-again")[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["strategy"] == "ParameterServerStrategy"
    assert metrics["steps"] == epochs * steps_per_epoch and metrics["steps_this_run"] == epochs * steps_per_epoch - prior
    assert not (model_dir / "backup").exists() and json.loads((model_dir / "run.json").read_text())["status"] == "finished"


def _run_steps(model_dir) -> int:
    try:
        return int(json.loads((model_dir / "run.json").read_text())["steps"])
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return 0


def test_the_partitioner_splits_tables_of_many_ids_and_keeps_the_rest_whole():
    partitioner = EmbeddingPartitioner(max_shards=2)
    assert partitioner([1_000_000, 8], "float32") == [2, 1]  # a million ids: one shard per parameter server
    assert partitioner([2 * DEFAULT_MIN_SHARD_ROWS, 8], "float32") == [2, 1]
    assert partitioner([2 * DEFAULT_MIN_SHARD_ROWS - 1, 8], "float32") == [1, 1]  # a shard would be too small
    assert partitioner([1952, 8], "float32") == [1, 1]  # the tiny preset's video table
    assert partitioner([128, 128], "float32") == [1, 1]  # a dense kernel as large in bytes as a 2,048-id table
    assert partitioner([1_000_000], "float32") == [1] and partitioner([], "int64") == []  # vectors, scalars
    assert EmbeddingPartitioner(4, min_shard_rows=1000)([3500, 16], "float32") == [3, 1]  # each shard >= 1000 rows
    assert EmbeddingPartitioner(4, min_shard_rows=1000)([10**6, 16], "float32") == [4, 1]  # at most max_shards
    for bad, message in ((dict(max_shards=0), "max_shards must be an integer > 0, got max_shards=0"),
                         (dict(max_shards=2, min_shard_rows=0), "min_shard_rows=0"),
                         (dict(max_shards=2.5), "max_shards=2.5")):
        with pytest.raises(ValueError, match=re.escape(message)):
            EmbeddingPartitioner(**bad)


def test_parameter_server_tf_config_is_checked(monkeypatch):
    def tf_config(cluster, kind="chief", index=0):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))

    full = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    for cluster, message in (({"worker": ["a:1", "b:2"], "ps": ["c:3"]}, "needs exactly one 'chief' task"),
                             ({"chief": ["a:1"], "ps": ["c:3"]}, "needs at least one 'worker' task"),
                             ({**full, "evaluator": ["d:4"]}, "names task types ['evaluator']")):
        tf_config(cluster)
        with pytest.raises(ValueError, match=re.escape(message)):
            strategy_from_environment()
    tf_config(full, "chief", 1)
    with pytest.raises(ValueError, match=re.escape("task index must be 0..0 for type='chief', got index=1")):
        strategy_from_environment()
    for kind in ("worker", "ps"):  # they serve: `tfcascade train` runs run_server() for them
        tf_config(full, kind)
        assert serves_cluster()
        with pytest.raises(ValueError, match=f"task type='{kind}' of a parameter-server cluster runs a TensorFlow server"):
            strategy_from_environment()
    tf_config(full, "chief")
    assert not serves_cluster()
    with pytest.raises(ValueError, match="does not make this process a worker or ps"):
        run_server(join=False)
    tf_config({"worker": ["a:1", "b:2"]}, "worker")
    assert not serves_cluster()


def test_what_parameter_server_training_cannot_honour_is_refused():
    ok = TrainConfig(steps_per_epoch=10)
    with pytest.raises(ValueError, match=re.escape("steps_per_epoch must be given under ParameterServerStrategy")):
        _require_parameter_server_options(TrainConfig(), "/runs/a", "/data")
    with pytest.raises(ValueError, match=re.escape("backup_every must be 'epoch' under ParameterServerStrategy")):
        _require_parameter_server_options(TrainConfig(steps_per_epoch=10, backup_every=5), "/runs/a", "/data")
    # Measured: a relative model_dir makes the parameter servers write their checkpoint shards
    # under their own working directory (NotFoundError at the first backup).
    with pytest.raises(ValueError, match=re.escape("model_dir must be an absolute path or a URL under "
                                                   "ParameterServerStrategy (the parameter servers write")):
        _require_parameter_server_options(ok, "runs/a", "/data")
    with pytest.raises(ValueError, match=re.escape("got train data='part-0.tfrecord.gz'")):
        _require_parameter_server_options(ok, "gs://bucket/runs/a", ["/data/part-1.tfrecord.gz", "part-0.tfrecord.gz"])
    _require_parameter_server_options(ok, "gs://bucket/runs/a", "/data")

    class PerBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(ValueError, match=re.escape("callbacks=['PerBatch'] have batch-level hooks")):
        _refuse_batch_callbacks([keras.callbacks.History(), PerBatch()])
    _refuse_batch_callbacks([keras.callbacks.History()])  # epoch-level callbacks are fine


def test_the_train_command_checks_the_shard_option(tiny_data, tmp_path, monkeypatch, capsys):
    from tfcascade.cli.main import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--data", str(tiny_data), "--model-dir", str(tmp_path), "--ps-min-shard-rows", "0"]) == 2
    assert "--ps-min-shard-rows must be an integer > 0, got --ps-min-shard-rows 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
