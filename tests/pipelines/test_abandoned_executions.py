"""Executions a killed local run leaves RUNNING in ML Metadata, and the pipeline root's run lock.

TFX 1.21's LocalDagRunner registers an execution RUNNING when a node starts and publishes
COMPLETE / CACHED / FAILED from the same live process; a run killed in a component leaves it
RUNNING, and the next run (a new pipeline-run context) never looks at it. ``run_pipeline`` marks
such executions CANCELED before it starts (tfcascade/pipelines/local_runner.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tfx")
pytest.importorskip("ml_metadata")

from ml_metadata.proto import metadata_store_pb2 as pb  # noqa: E402

from tfcascade.pipelines import local_runner as lr  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINER_TYPE = "tfx.components.trainer.component.Trainer"  # the type LocalDagRunner registers
PIPELINE = "tfcascade"


def _connection(root):
    from tfx import v1 as tfx

    return tfx.orchestration.metadata.sqlite_metadata_connection_config(lr.metadata_path(str(root)))


def _register(root, run_id, node="Trainer", state=pb.Execution.RUNNING, type_name=TRAINER_TYPE):
    """Registers an execution of ``node`` in run ``run_id`` as TFX's launcher does.

    Same contexts as LocalDagRunner (pipeline, pipeline_run child of it, node ``<pipeline>.<node>``,
    made with TFX's context_lib) and TFX's ``register_execution``.

    Returns:
      ``(execution, contexts)``.
    """
    from tfx.orchestration import metadata
    from tfx.orchestration.portable import execution_publish_utils
    from tfx.orchestration.portable.mlmd import context_lib

    with metadata.Metadata(_connection(root)) as m:
        pipeline = context_lib.register_context_if_not_exists(m, "pipeline", PIPELINE)
        run = context_lib.register_context_if_not_exists(m, "pipeline_run", run_id, [pipeline])
        node_context = context_lib.register_context_if_not_exists(m, "node", f"{PIPELINE}.{node}")
        contexts = [pipeline, run, node_context]
        execution = execution_publish_utils.register_execution(
            m, pb.ExecutionType(name=type_name), contexts, last_known_state=state)
    return execution, contexts


def _store(root):
    return lr.metadata_store(str(root))


def _execution(root, execution_id):
    [execution] = _store(root).get_executions_by_id([execution_id])
    return execution


def _abandoned(proto):
    return proto.custom_properties[lr.ABANDONED_KEY].string_value


def hold_root_and_leave_a_running_trainer(root: str, run_id: str) -> None:
    """What a pipeline process holds while its Trainer runs: the lock and a RUNNING execution.

    Run in a child process by the tests (then killed with SIGKILL): prints the execution id.
    """
    with lr.pipeline_root_lock(root, run_id, PIPELINE):
        lr._record_run(_connection(root), PIPELINE, run_id)
        execution, _ = _register(root, run_id)
        print(execution.id, flush=True)
        time.sleep(600)


def test_only_active_executions_of_earlier_runs_are_canceled_and_their_pending_outputs_abandoned(tmp_path):
    from tfx import types
    from tfx.orchestration import metadata
    from tfx.orchestration.portable.mlmd import execution_lib
    from tfx.types import standard_artifacts

    root = tmp_path / "root"
    root.mkdir()
    lr._record_run(_connection(root), PIPELINE, "old")
    running, contexts = _register(root, "old")
    new, _ = _register(root, "old", node="Pusher", state=pb.Execution.NEW, type_name="AtomicPusher")
    done, _ = _register(root, "old", node="SchemaGen", state=pb.Execution.COMPLETE, type_name="SchemaGen")
    current, _ = _register(root, "now", node="StatisticsGen", type_name="StatisticsGen")
    with metadata.Metadata(_connection(root)) as m:
        # The running Trainer's outputs: registered PENDING as TFX does (PENDING_OUTPUT events),
        # and one intermediate output it published LIVE.
        model = standard_artifacts.Model()
        model.uri = str(root / "Trainer" / "model" / str(running.id))
        execution_lib.register_output_artifacts(m, running.id, {"model": [model]})
        published = standard_artifacts.ModelRun()
        published.uri = str(root / "Trainer" / "model_run" / str(running.id))
        published.state = types.artifact.ArtifactState.PUBLISHED
        [running] = m.store.get_executions_by_id([running.id])
        execution_lib.put_execution(m, running, contexts, output_artifacts={"model_run": [published]})
        # An execution outside any pipeline run (another tool's): not ours to judge.
        foreign = pb.Execution(type_id=running.type_id, last_known_state=pb.Execution.RUNNING)
        [foreign_id] = m.store.put_executions([foreign])
    store = _store(root)
    assert store.get_artifacts_by_id([model.id])[0].state == pb.Artifact.PENDING  # precondition

    marked = lr.mark_abandoned_executions(store, found_by="now", select_run=lambda run: run != "now")

    assert [(m.execution_id, m.node, m.run_id, m.previous_state) for m in marked] == [
        (running.id, f"{PIPELINE}.Trainer", "old", "RUNNING"),
        (new.id, f"{PIPELINE}.Pusher", "old", "NEW")]
    assert marked[0].abandoned_artifact_ids == [model.id] and marked[1].abandoned_artifact_ids == []
    for execution_id in (running.id, new.id):
        execution = _execution(root, execution_id)
        assert execution.last_known_state == pb.Execution.CANCELED
        assert _abandoned(execution) == (f"process ended without finishing (runner pid {os.getpid()} "
                                         f"on {socket.gethostname()}; found by run now)")
    [model_after, published_after] = store.get_artifacts_by_id([model.id, published.id])
    assert model_after.state == pb.Artifact.ABANDONED and _abandoned(model_after).startswith(
        "process ended without finishing")
    assert published_after.state == pb.Artifact.LIVE and lr.ABANDONED_KEY not in published_after.custom_properties
    assert _execution(root, done.id).last_known_state == pb.Execution.COMPLETE
    assert _execution(root, current.id).last_known_state == pb.Execution.RUNNING
    assert _execution(root, foreign_id).last_known_state == pb.Execution.RUNNING
    # The summary reads the old run's Trainer as CANCELED; a second pass finds nothing.
    assert lr.mark_abandoned_executions(store, found_by="later", select_run=lambda run: True) == [
        lr.AbandonedExecution(current.id, f"{PIPELINE}.StatisticsGen", "now", "RUNNING")]
    assert lr.mark_abandoned_executions(store, found_by="later", select_run=lambda run: True) == []
    line = lr.describe_abandoned(marked)
    assert "\n" not in line and line.startswith("ML Metadata: marked 2 executions") and (
        f"Trainer #{running.id} of run old" in line and "1 pending output artifact ABANDONED" in line)


def test_a_live_run_holds_the_pipeline_root_and_a_killed_one_does_not(tmp_path):
    root = tmp_path / "root"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tfcascade; "
            "import test_abandoned_executions as t; "
            "t.hold_root_and_leave_a_running_trainer(sys.argv[2], 'killed-run')")
    child = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(root)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = "-"
        while line and not line.strip().isdigit():  # the child holds the lock once it prints
            line = child.stdout.readline()
        assert line, f"the child did not start (exit {child.poll()})"
        execution_id = int(line)
        # While the child lives a second run is refused, in one line, and touches nothing.
        with pytest.raises(lr.PipelineRootInUse) as refused:
            lr.run_pipeline(data_dir=str(tmp_path / "raw"), pipeline_root=str(root),
                            serving_dir=str(tmp_path / "serving"))
        message = str(refused.value)
        assert "\n" not in message and f"pipeline_root={str(root)!r} is in use" in message
        assert f"pipeline run 'killed-run' (pid {child.pid} on" in message
        assert _execution(root, execution_id).last_known_state == pb.Execution.RUNNING
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
        child.stdout.close()
    # Killed: the kernel released the lock; its Trainer is still RUNNING until a run cleans it.
    assert _execution(root, execution_id).last_known_state == pb.Execution.RUNNING
    with lr.pipeline_root_lock(str(root), "next-run"):
        marked = lr.mark_abandoned_executions(_store(root), found_by="next-run",
                                              select_run=lambda run: run != "next-run")
    assert [m.execution_id for m in marked] == [execution_id]
    execution = _execution(root, execution_id)
    assert execution.last_known_state == pb.Execution.CANCELED
    assert f"runner pid {child.pid} on" in _abandoned(execution) and "found by run next-run" in _abandoned(execution)


def test_an_interrupted_run_marks_its_own_executions(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "placeholder.txt").write_text("x")  # only construction: nothing is read
    root = tmp_path / "root"
    seen = {}

    def interrupted(pipeline, run_id):  # the Trainer is running when Ctrl-C arrives
        seen["execution"], _ = _register(root, run_id)
        seen["run_id"] = run_id
        raise KeyboardInterrupt

    monkeypatch.setattr(lr, "_run_with_run_id", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lr.run_pipeline(data_dir=str(raw), pipeline_root=str(root), serving_dir=str(tmp_path / "s"))
    execution = _execution(root, seen["execution"].id)
    assert execution.last_known_state == pb.Execution.CANCELED
    assert _abandoned(execution).startswith("run interrupted (KeyboardInterrupt) (runner pid")
    assert _abandoned(execution).endswith(f"found by run {seen['run_id']})")
    with lr.pipeline_root_lock(str(root), "after"):  # released
        pass


# ---- the real thing: kill the pipeline process while its Trainer trains, run again -----------

def _running_trainers(db: Path) -> list[int]:
    """Ids of RUNNING Trainer executions, read without taking a write lock."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("SELECT e.id FROM Execution e JOIN Type t ON e.type_id = t.id "
                               "WHERE t.name = ? AND e.last_known_state = ?",
                               (TRAINER_TYPE, pb.Execution.RUNNING)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or busy
        return []
    return [row[0] for row in rows]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_rerun_after_the_pipeline_is_killed_during_training_cancels_it_and_completes(tmp_path, capfd):
    from tfcascade.data import simulate
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.pipelines import cascade_pipeline as cp
    from tfcascade.training import TrainConfig

    raw, root, serving = tmp_path / "raw", tmp_path / "root", tmp_path / "serving"
    simulate(str(raw), preset="tiny", seed=0)
    options = ["--epochs", "1", "--batch-size", "32", "--min-joint-recall", "0.0"]
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfcascade.cli.main", "pipeline", "run", "--data", str(raw),
             "--pipeline-root", str(root), "--serving-dir", str(serving), *options],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        try:
            deadline = time.monotonic() + 900
            while not _running_trainers(root / lr.METADATA_FILE):
                assert process.poll() is None, f"the pipeline ended before its Trainer ran: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "the Trainer did not start within 900 s"
                time.sleep(0.2)
            time.sleep(2)  # inside run_fn
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)
    # What the kill left (TFX alone never changes it): the Trainer RUNNING, no output registered.
    [killed] = _running_trainers(root / lr.METADATA_FILE)
    store = _store(root)
    assert not [e for e in store.get_events_by_execution_ids([killed])
                if e.type != pb.Event.INPUT]
    capfd.readouterr()

    second = lr.run_pipeline(data_dir=str(raw), pipeline_root=str(root), serving_dir=str(serving),
                             spec=CascadeSpec.default(), config=TrainConfig(epochs=1, batch_size=32),
                             min_joint_recall=0.0)

    err = capfd.readouterr().err
    assert f"ML Metadata: marked 1 execution left NEW/RUNNING by a run that ended without finishing " \
           f"CANCELED (Trainer #{killed} of run " in err
    assert [(m.execution_id, m.node, m.previous_state) for m in second.abandoned] == [
        (killed, f"{PIPELINE}.Trainer", "RUNNING")]
    execution = _execution(root, killed)
    assert execution.last_known_state == pb.Execution.CANCELED
    assert _abandoned(execution) == (f"process ended without finishing (runner pid {process.pid} on "
                                     f"{socket.gethostname()}; found by run {second.run_id})")
    assert not _running_trainers(root / lr.METADATA_FILE)
    # The rerun reuses what the killed run finished, trains again, validates and pushes.
    for node in (cp.EXAMPLE_GEN, cp.STATISTICS_GEN, cp.SCHEMA_GEN, cp.EXAMPLE_VALIDATOR):
        assert second.node_states[node] == "CACHED", second.node_states
    for node in (cp.TRAINER, cp.VALIDATOR, cp.PUSHER):
        assert second.node_states[node] == "COMPLETE", second.node_states
    # Validated and pushed as usual: published exactly when blessed (the blessing rule is not
    # this test's business).
    assert second.joint_recall is not None and os.path.exists(second.metrics_path)
    assert second.blessed is not None and second.pushed == second.blessed
    if second.pushed:
        assert (Path(second.pushed_destination) / "saved_model.pb").exists()
