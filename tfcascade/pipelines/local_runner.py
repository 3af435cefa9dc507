"""Runs the cascade pipeline on this machine with TFX's ``LocalDagRunner``.

ML Metadata lives in SQLite at ``<pipeline_root>/metadata.sqlite``; artifacts under
``<pipeline_root>/<component>/<output>/<execution id>/``. After a run, :func:`summarize_run`
reads ML Metadata back: the joint recall and blessing of the model the run produced, where it
was pushed, and the state of every node (``COMPLETE`` / ``CACHED`` / ...).

A run that ends without finishing (``kill -9``, out of memory, a lost machine, Ctrl-C inside a
component) leaves its execution ``RUNNING`` in ML Metadata: TFX's launcher only publishes
``COMPLETE`` / ``CACHED`` / ``FAILED`` from a live process, and the next ``LocalDagRunner`` run
starts a new pipeline-run context and never looks at the old one. So every run here

- holds an exclusive lock on ``<pipeline_root>/.tfcascade-run.lock`` (``flock``: the kernel
  releases it when the process dies, however it dies); a second run on the same pipeline root
  is refused while the first is alive (:class:`PipelineRootInUse`);
- records its runner (pid and host) on its ``pipeline_run`` context;
- before the first node, marks every execution still ``NEW`` / ``RUNNING`` from an earlier run
  ``CANCELED`` (what TFX's own orchestrator sets on executions it abandons), with a custom
  property ``abandoned`` saying why, and its ``PENDING`` output artifacts ``ABANDONED``
  (:func:`mark_abandoned_executions`); it prints one line when it marked any;
- marks its own active executions the same way when it is interrupted (``KeyboardInterrupt``,
  ``SystemExit``) before it re-raises.

Usage::

    python -m tfcascade.pipelines.local_runner --data DATA --pipeline-root ROOT --serving-dir SERVING

or ``tfcascade pipeline run`` (``tfcascade/cli/pipeline.py``), which also simulates the data.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from absl import logging

METADATA_FILE = "metadata.sqlite"
# Held (flock) by the process running a pipeline in this pipeline root; its text names the run.
LOCK_FILE = ".tfcascade-run.lock"
# Custom property on an execution / artifact marked by mark_abandoned_executions: why.
ABANDONED_KEY = "abandoned"
# Custom property on the pipeline_run context: which process ran it ("pid N on HOST").
RUNNER_KEY = "tfcascade_runner"
ENDED_WITHOUT_FINISHING = "process ended without finishing"
_PIPELINE_RUN_TYPE = "pipeline_run"  # tfx.dsl.compiler.constants.PIPELINE_RUN_CONTEXT_TYPE_NAME
_PIPELINE_TYPE = "pipeline"  # tfx.dsl.compiler.constants.PIPELINE_CONTEXT_TYPE_NAME
_NODE_TYPE = "node"  # tfx.dsl.compiler.constants.NODE_CONTEXT_TYPE_NAME


def metadata_path(pipeline_root: str) -> str:
    """The SQLite file holding the pipeline's ML Metadata."""
    return os.path.join(pipeline_root, METADATA_FILE)


def metadata_store(pipeline_root: str):
    """An ``ml_metadata.MetadataStore`` over the pipeline's SQLite database (read/write)."""
    from ml_metadata.metadata_store import metadata_store as mlmd
    from tfx import v1 as tfx

    path = metadata_path(pipeline_root)
    if not os.path.exists(path):
        raise ValueError(f"no ML Metadata at {path}: has a pipeline run in pipeline_root="
                         f"{pipeline_root!r}?")
    return mlmd.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(path))


class PipelineRootInUse(RuntimeError):
    """Another live process is running a pipeline in this pipeline root (one line: which)."""


def lock_path(pipeline_root: str) -> str:
    """The lock file next to the pipeline's ML Metadata (:data:`LOCK_FILE`)."""
    return os.path.join(pipeline_root, LOCK_FILE)


def _runner() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _holder(path: str) -> str:
    """Who holds the lock at ``path``, as far as its text says (one phrase)."""
    try:
        with open(path) as f:
            info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    text = f"pipeline run {info.get('run_id')!r} (pid {info['pid']} on {info.get('host')})"
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            # The runner died but the lock is still held: a child it forked lives on.
            text += f", whose runner has ended but a process it started still holds {path} " \
                    f"(`fuser {path}` names it)"
        except (PermissionError, ValueError):
            pass
    return text


@contextlib.contextmanager
def pipeline_root_lock(pipeline_root: str, run_id: str, pipeline_name: str = "") -> Iterator[str]:
    """Holds the pipeline root's run lock (``flock`` on :data:`LOCK_FILE`) while in the block.

    The kernel releases an ``flock`` when the process holding it ends, however it ends (also
    ``kill -9``), so holding it proves that no other live process runs a pipeline on this pipeline
    root's ML Metadata through this runner. The file is kept (deleting a lock file races); its
    text names the holder for a refused run.

    Args:
      pipeline_root: the pipeline root (created if missing).
      run_id: the pipeline run id of the run taking the lock (written into the lock file).
      pipeline_name: written into the lock file, for the message of a refused run.

    Yields:
      The lock file's path.

    Raises:
      PipelineRootInUse: another live process holds the lock (the message names it).
    """
    os.makedirs(pipeline_root, exist_ok=True)
    path = lock_path(pipeline_root)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineRootInUse(
                f"pipeline_root={pipeline_root!r} is in use by {_holder(path)}: one run at a time "
                "per pipeline root (wait for it, stop it, or give another --pipeline-root)"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                "pipeline_name": pipeline_name, "started": datetime.datetime.now().isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


@dataclass
class AbandonedExecution:
    """An execution :func:`mark_abandoned_executions` marked ``CANCELED``."""

    execution_id: int
    node: str | None
    run_id: str
    previous_state: str
    abandoned_artifact_ids: list[int] = field(default_factory=list)


def _context_name(contexts: list, type_id: int) -> str | None:
    names = [c.name for c in contexts if c.type_id == type_id]
    return names[0] if names else None


def _type_id(store, name: str) -> int | None:
    from ml_metadata import errors

    try:
        return store.get_context_type(name).id
    except errors.NotFoundError:
        return None


def mark_abandoned_executions(
    store,
    *,
    found_by: str,
    select_run: Callable[[str], bool],
    reason: str = ENDED_WITHOUT_FINISHING,
) -> list[AbandonedExecution]:
    """Marks the ``NEW`` / ``RUNNING`` executions of the selected pipeline runs ``CANCELED``.

    Call it only while holding :func:`pipeline_root_lock` (then no live run of this runner owns
    any of them). An execution is selected when its ``pipeline_run`` context's name (the run id)
    passes ``select_run``; executions without a ``pipeline_run`` context are not a pipeline's
    and are left alone. Each marked execution gets the custom property ``abandoned`` =
    ``"<reason> (<runner>; found by run <found_by>)"``; its output artifacts still ``PENDING``
    (``PENDING_OUTPUT`` / ``DECLARED_OUTPUT`` / ``OUTPUT`` events) become ``ABANDONED`` with the
    same property, in the same MLMD transaction. ``LIVE`` outputs are left as they are: a
    running TFX execution only has those when it published them on purpose (intermediate
    artifacts), and TFX's own cancellation leaves them too.

    ``CANCELED``, not ``FAILED``: ``FAILED`` is what TFX's launcher publishes when the executor
    reported an error (with its ``__execution_result__``); for executions whose orchestrator
    gave them up TFX's orchestrator (``pipeline_ops._cancel_executions``) sets ``CANCELED`` and
    marks their pending outputs ``ABANDONED``. Neither state is ever a cache hit.

    Args:
      store: an ``ml_metadata.MetadataStore``.
      found_by: the run id that found them (recorded in the property).
      select_run: which pipeline run ids to clean.
      reason: why they are abandoned (recorded in the property).

    Returns:
      One :class:`AbandonedExecution` per marked execution, in id order.
    """
    from ml_metadata import errors
    from ml_metadata.proto import metadata_store_pb2 as pb

    run_type, node_type = _type_id(store, _PIPELINE_RUN_TYPE), _type_id(store, _NODE_TYPE)
    if run_type is None:
        return []
    active = (pb.Execution.NEW, pb.Execution.RUNNING)
    output_events = (pb.Event.PENDING_OUTPUT, pb.Event.DECLARED_OUTPUT, pb.Event.OUTPUT)
    marked = []
    for execution in sorted(store.get_executions(), key=lambda e: e.id):
        if execution.last_known_state not in active:
            continue
        try:
            contexts = store.get_contexts_by_execution(execution.id)
        except errors.NotFoundError:  # in no context at all: not a pipeline's
            continue
        runs = [c for c in contexts if c.type_id == run_type]
        if not runs or not select_run(runs[0].name):
            continue
        runner = _value(runs[0], RUNNER_KEY)
        why = f"{reason} ({f'runner {runner}; ' if runner else ''}found by run {found_by})"
        previous = pb.Execution.State.Name(execution.last_known_state)
        execution.last_known_state = pb.Execution.CANCELED
        execution.custom_properties[ABANDONED_KEY].string_value = why
        outputs = {e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type in output_events}
        pending = [a for a in (store.get_artifacts_by_id(sorted(outputs)) if outputs else [])
                   if a.state == pb.Artifact.PENDING]
        for artifact in pending:
            artifact.state = pb.Artifact.ABANDONED
            artifact.custom_properties[ABANDONED_KEY].string_value = why
        store.put_execution(execution, [(a, None) for a in pending], contexts=None)
        node = _context_name(contexts, node_type) if node_type is not None else None
        marked.append(AbandonedExecution(
            execution_id=execution.id, node=node, run_id=runs[0].name, previous_state=previous,
            abandoned_artifact_ids=[a.id for a in pending]))
        logging.warning("execution %d (%s) of run %s: %s -> CANCELED: %s", execution.id, node,
                        runs[0].name, previous, why)
    return marked


def describe_abandoned(marked: list[AbandonedExecution]) -> str:
    """One line naming how many executions (and artifacts) were marked, and which.

    Args:
      marked: what :func:`mark_abandoned_executions` returned.

    Returns:
      The line ``run_pipeline`` prints on stderr.
    """
    artifacts = sum(len(m.abandoned_artifact_ids) for m in marked)
    which = ", ".join(f"{(m.node or '?').rsplit('.', 1)[-1]} #{m.execution_id} of run {m.run_id}"
                      for m in marked)
    return (f"ML Metadata: marked {len(marked)} execution{'s' if len(marked) != 1 else ''} left "
            f"NEW/RUNNING by a run that ended without finishing CANCELED ({which}) and "
            f"{artifacts} pending output artifact{'s' if artifacts != 1 else ''} ABANDONED")


def _record_run(connection_config, pipeline_name: str, run_id: str) -> None:
    """Registers the run's ``pipeline`` and ``pipeline_run`` contexts as TFX does, plus its runner.

    TFX registers them on the first node (``context_lib.prepare_contexts``: get or create by
    type and name, the run a child of the pipeline) and reuses existing ones, so registering
    them first with TFX's own function only adds the ``tfcascade_runner`` custom property.

    Args:
      connection_config: the pipeline's ML Metadata connection config.
      pipeline_name: the ``pipeline`` context's name.
      run_id: the ``pipeline_run`` context's name (the run id).
    """
    from tfx.orchestration import metadata
    from tfx.orchestration.portable.mlmd import context_lib

    with metadata.Metadata(connection_config) as m:
        pipeline = context_lib.register_context_if_not_exists(m, _PIPELINE_TYPE, pipeline_name)
        run = context_lib.register_context_if_not_exists(
            m, _PIPELINE_RUN_TYPE, run_id, parent_contexts=[pipeline])
        run.custom_properties[RUNNER_KEY].string_value = _runner()
        m.store.put_contexts([run])


def _run_with_run_id(pipeline, run_id: str) -> None:
    """``LocalDagRunner().run(pipeline)`` with the pipeline run id chosen here.

    ``LocalDagRunner.run`` compiles the pipeline (``tfx_runner._make_pipeline_proto``) and fills
    the ``pipeline-run-id`` runtime parameter with ``datetime.now().isoformat()`` in
    ``run_with_ir``; filling it first with the same format makes that a no-op, so the id is
    known before the run (for the lock, the runner record and the cleanup).
    """
    from tfx import v1 as tfx
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils, tfx_runner

    ir = tfx_runner._make_pipeline_proto(pipeline)  # what LocalDagRunner.run does
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    tfx.orchestration.LocalDagRunner().run_with_ir(ir)


@dataclass
class RunSummary:
    """What one pipeline run produced, read back from ML Metadata."""

    pipeline_root: str
    run_id: str | None
    node_states: dict[str, str]
    joint_recall: float | None = None
    min_joint_recall: float | None = None
    baseline_joint_recall: float | None = None
    # The naive rankers' joint recall on the same eval split, and the margin to beat them by.
    naive_joint_recalls: dict[str, float] = field(default_factory=dict)
    margin: float | None = None
    blessed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    metrics_path: str | None = None
    pushed: bool = False
    pushed_destination: str | None = None
    pushed_version: str | None = None
    # Executions of earlier runs this run marked CANCELED before it started (their process died).
    abandoned: list[AbandonedExecution] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_pipeline(
    *,
    data_dir: str,
    pipeline_root: str,
    serving_dir: str,
    **pipeline_kwargs: Any,
) -> RunSummary:
    """Builds the pipeline (``create_pipeline`` arguments), runs it locally, summarises it.

    The run holds the pipeline root's lock (:func:`pipeline_root_lock`) from start to end. Before
    the first node it marks the executions that earlier runs left ``NEW`` / ``RUNNING`` (their
    process died) ``CANCELED`` and prints one line on stderr when there were any
    (:func:`mark_abandoned_executions`); if it is interrupted it marks its own the same way.

    Args:
      data_dir: raw logs (RecFlow layout).
      pipeline_root: artifacts and ``metadata.sqlite`` go here.
      serving_dir: TF Serving model base for the Pusher.
      **pipeline_kwargs: any other argument of ``tfcascade.pipelines.cascade_pipeline.create_pipeline``.

    Returns:
      The :class:`RunSummary` of this run (``abandoned``: what it cleaned up).

    Raises:
      PipelineRootInUse: another live process runs a pipeline in ``pipeline_root``.
    """
    from tfx import v1 as tfx

    from tfcascade.pipelines.cascade_pipeline import DEFAULT_PIPELINE_NAME, create_pipeline

    pipeline_root = os.path.abspath(pipeline_root)
    pipeline_name = pipeline_kwargs.get("pipeline_name", DEFAULT_PIPELINE_NAME)
    run_id = datetime.datetime.now().isoformat()  # LocalDagRunner's own format
    with pipeline_root_lock(pipeline_root, run_id, pipeline_name):
        config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path(pipeline_root)
        )
        pipeline = create_pipeline(
            data_dir=data_dir,
            pipeline_root=pipeline_root,
            serving_dir=serving_dir,
            metadata_connection_config=config,
            **pipeline_kwargs,
        )
        _record_run(config, pipeline_name, run_id)
        store = metadata_store(pipeline_root)
        abandoned = mark_abandoned_executions(store, found_by=run_id,
                                              select_run=lambda run: run != run_id)
        if abandoned:
            print(describe_abandoned(abandoned), file=sys.stderr, flush=True)
        logging.info("Running pipeline %s (run %s) in %s", pipeline_name, run_id, pipeline_root)
        try:
            _run_with_run_id(pipeline, run_id)
        except (KeyboardInterrupt, SystemExit) as err:
            try:
                mark_abandoned_executions(store, found_by=run_id,
                                          select_run=lambda run: run == run_id,
                                          reason=f"run interrupted ({type(err).__name__})")
            except Exception as cleanup_error:  # noqa: BLE001 (the interrupt is what matters)
                logging.error("could not mark the interrupted run's executions: %s", cleanup_error)
            raise
        summary = summarize_run(pipeline_root, pipeline_name)
    summary.abandoned = abandoned
    return summary


def _value(proto: Any, key: str) -> Any:
    if key not in proto.custom_properties:
        return None
    value = proto.custom_properties[key]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def node_states(store, pipeline_name: str) -> tuple[str | None, dict[str, str]]:
    """``(run_id, {node id: execution state})`` of the latest run of ``pipeline_name``.

    Every execution LocalDagRunner records is associated with three contexts: the pipeline,
    the run (type ``pipeline_run``, named by the run id) and the node (``<pipeline>.<node>``).
    """
    from ml_metadata.proto import metadata_store_pb2

    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return None, {}
    run_type = store.get_context_type("pipeline_run").id
    by_run: dict[int, tuple[str, dict[str, str]]] = {}
    for execution in sorted(store.get_executions_by_context(pipeline.id), key=lambda e: e.id):
        contexts = store.get_contexts_by_execution(execution.id)
        runs = [c for c in contexts if c.type_id == run_type]
        nodes = [c.name[len(pipeline_name) + 1:] for c in contexts
                 if c.name.startswith(pipeline_name + ".")]
        if not runs or not nodes:
            continue
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        by_run.setdefault(runs[0].id, (runs[0].name, {}))[1][nodes[0]] = state
    if not by_run:
        return None, {}
    return by_run[max(by_run)]


def _latest_output(store, pipeline_name: str, node: str, type_name: str):
    """The newest artifact of ``type_name`` attributed to ``node`` (None if there is none)."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    wanted = {a.id for a in store.get_artifacts_by_type(type_name)}
    if context is None or not wanted:
        return None
    artifacts = [a for a in store.get_artifacts_by_context(context.id) if a.id in wanted]
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def summarize_run(pipeline_root: str, pipeline_name: str) -> RunSummary:
    """Reads the latest run's outcome from ``<pipeline_root>/metadata.sqlite``."""
    from tfcascade.components import blessing as bl
    from tfcascade.components.joint_recall_validator import METRICS_FILE
    from tfcascade.pipelines.cascade_pipeline import PUSHER, VALIDATOR

    store = metadata_store(pipeline_root)
    run_id, states = node_states(store, pipeline_name)
    summary = RunSummary(pipeline_root=pipeline_root, run_id=run_id, node_states=states)
    blessing = _latest_output(store, pipeline_name, VALIDATOR, "ModelBlessing")
    if blessing is not None:
        summary.blessed = _value(blessing, bl.BLESSED_KEY) == 1
        summary.joint_recall = _value(blessing, bl.JOINT_RECALL_KEY)
        summary.min_joint_recall = _value(blessing, bl.MIN_JOINT_RECALL_KEY)
        summary.baseline_joint_recall = _value(blessing, bl.BASELINE_JOINT_RECALL_KEY)
    evaluation = _latest_output(store, pipeline_name, VALIDATOR, "ModelEvaluation")
    if evaluation is not None:
        path = os.path.join(evaluation.uri, METRICS_FILE)
        if os.path.exists(path):
            summary.metrics_path = path
            with open(path) as f:
                decision = json.load(f).get("decision", {})
            summary.reasons = decision.get("reasons", [])
            summary.naive_joint_recalls = decision.get("naive_joint_recalls", {})
            summary.margin = decision.get("margin")
    pushed = _latest_output(store, pipeline_name, PUSHER, "PushedModel")
    if pushed is not None and _value(pushed, "pushed") == 1:
        summary.pushed = True
        summary.pushed_destination = _value(pushed, "pushed_destination")
        summary.pushed_version = _value(pushed, "pushed_version")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="raw logs in the RecFlow layout")
    parser.add_argument("--pipeline-root", required=True)
    parser.add_argument("--serving-dir", required=True)
    parser.add_argument("--stages", type=int, default=2, choices=(2, 3))
    parser.add_argument("--loss", default="lcron")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--min-joint-recall", type=float, default=None)
    args = parser.parse_args(argv)
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig

    kwargs: dict[str, Any] = {"spec": CascadeSpec.default(args.stages),
                              "config": TrainConfig(loss=args.loss, epochs=args.epochs)}
    if args.min_joint_recall is not None:
        kwargs["min_joint_recall"] = args.min_joint_recall
    summary = run_pipeline(data_dir=args.data, pipeline_root=args.pipeline_root,
                           serving_dir=args.serving_dir, **kwargs)
    print(json.dumps(summary.as_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
