"""Runs the cascade pipeline on this machine with TFX's ``LocalDagRunner``.

ML Metadata lives in SQLite at ``<pipeline_root>/metadata.sqlite``; artifacts under
``<pipeline_root>/<component>/<output>/<execution id>/``. After a run, :func:`summarize_run`
reads ML Metadata back: the joint recall and blessing of the model the run produced, where it
was pushed, and the state of every node (``COMPLETE`` / ``CACHED`` / ...).

Usage::

    python -m tfcascade.pipelines.local_runner --data DATA --pipeline-root ROOT --serving-dir SERVING

or ``tfcascade pipeline run`` (``tfcascade/cli/pipeline.py``), which also simulates the data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from absl import logging

METADATA_FILE = "metadata.sqlite"


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


@dataclass
class RunSummary:
    """What one pipeline run produced, read back from ML Metadata."""

    pipeline_root: str
    run_id: str | None
    node_states: dict[str, str]
    joint_recall: float | None = None
    min_joint_recall: float | None = None
    baseline_joint_recall: float | None = None
    blessed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    metrics_path: str | None = None
    pushed: bool = False
    pushed_destination: str | None = None
    pushed_version: str | None = None

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

    Args:
      data_dir: raw logs (RecFlow layout).
      pipeline_root: artifacts and ``metadata.sqlite`` go here.
      serving_dir: TF Serving model base for the Pusher.
      **pipeline_kwargs: any other argument of ``tfcascade.pipelines.cascade_pipeline.create_pipeline``.

    Returns:
      The :class:`RunSummary` of this run.
    """
    from tfx import v1 as tfx

    from tfcascade.pipelines.cascade_pipeline import DEFAULT_PIPELINE_NAME, create_pipeline

    pipeline_root = os.path.abspath(pipeline_root)
    os.makedirs(pipeline_root, exist_ok=True)
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
    logging.info("Running pipeline %s in %s", pipeline.pipeline_info.pipeline_name, pipeline_root)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return summarize_run(
        pipeline_root, pipeline_kwargs.get("pipeline_name", DEFAULT_PIPELINE_NAME)
    )


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
                summary.reasons = json.load(f).get("decision", {}).get("reasons", [])
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
