"""The TFX pipeline that trains, validates and pushes a cascade ranker.

::

    RecFlowExampleGen ──► StatisticsGen ──► SchemaGen ──► ExampleValidator
      (Beam preprocessing      │                 │
       of the raw logs)        │                 ▼
           │                   └──────────► Trainer (tfcascade.components.trainer_module.run_fn)
           │                                     │ Model: Format-Serving/ + Format-Cascade/
           ▼                                     ▼
           └──────────────────────────► JointRecallValidator ◄── latest_blessed_model_resolver
                                           │ ModelEvaluation        (LatestBlessedModelStrategy
                                           │ ModelBlessing           over ML Metadata)
                                           ▼
                                      AtomicPusher ──► <serving_dir>/<model_name>/<version>/

``create_pipeline`` only builds the ``tfx.dsl.Pipeline``; ``tfcascade/pipelines/local_runner.py`` runs
it with ``LocalDagRunner`` and ``tfcascade/pipelines/kubeflow_runner.py`` compiles it for Kubeflow
Pipelines / Vertex AI.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfx import v1 as tfx

from tfcascade.components import trainer_module
from tfcascade.components.atomic_pusher import AtomicPusher, push_destination
from tfcascade.components.joint_recall_validator import (
    DEFAULT_BASELINES,
    DEFAULT_MARGIN,
    DEFAULT_SLICE_FEATURES,
    JointRecallValidator,
)
from tfcascade.components.recflow_example_gen import RecFlowExampleGen
from tfcascade.models.spec import CascadeSpec
from tfcascade.training.config import TrainConfig

DEFAULT_PIPELINE_NAME = "tfcascade"
DEFAULT_MODEL_NAME = "cascade"
# The blessing (tfcascade.components.blessing): beat the naive rankers scored on the same eval
# split by DEFAULT_MARGIN and do not regress below the latest blessed model by more than
# DEFAULT_TOLERANCE. No absolute bar by default: one fits one dataset only.
DEFAULT_MIN_JOINT_RECALL = None
DEFAULT_TOLERANCE = 0.01

# Node ids, also what the tests and the CLI look up in ML Metadata.
EXAMPLE_GEN = "RecFlowExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRAINER = "Trainer"
RESOLVER = "latest_blessed_model_resolver"
VALIDATOR = "JointRecallValidator"
PUSHER = "Pusher"
COMPONENT_IDS = (
    EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, TRAINER, RESOLVER, VALIDATOR,
    PUSHER,
)

_REPO_ROOT = Path(__file__).resolve().parents[2]  # holds the tfcascade package


# What the Trainer's output depends on (the CLI and the pipeline's own wiring do not change a
# trained model; the pipeline's parameters reach the Trainer through its custom_config).
TRAINING_CODE = ("tfcascade",)
_NOT_TRAINING_CODE = ("tfcascade/cli", "tfcascade/pipelines")


def code_fingerprint(roots: Sequence[str] = TRAINING_CODE) -> str:
    """SHA-256 of the Python sources the Trainer runs.

    The Trainer runs ``run_fn`` by import path, so TFX does not see code changes; this digest
    goes into the Trainer's ``custom_config`` (part of the cache key) so that changed training
    code is never answered from the cache.
    """
    digest = hashlib.sha256()
    for root in roots:
        base = _REPO_ROOT / root
        paths = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in paths:
            rel = str(path.relative_to(_REPO_ROOT))
            if rel.startswith(_NOT_TRAINING_CODE):
                continue
            digest.update(rel.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _absolute(path: str) -> str:
    """Local paths made absolute (components run with another working directory); URLs kept."""
    return path if "://" in path else os.path.abspath(path)


def create_pipeline(
    *,
    data_dir: str,
    pipeline_root: str,
    serving_dir: str,
    spec: CascadeSpec | None = None,
    config: TrainConfig | None = None,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    model_name: str = DEFAULT_MODEL_NAME,
    eval_days: int = 1,
    min_joint_recall: float | None = DEFAULT_MIN_JOINT_RECALL,
    tolerance: float = DEFAULT_TOLERANCE,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    margin: float = DEFAULT_MARGIN,
    slice_features: Sequence[str] = DEFAULT_SLICE_FEATURES,
    eval_batch_size: int = 256,
    metadata_connection_config: Any = None,
    beam_pipeline_args: Sequence[str] | None = None,
    enable_cache: bool = True,
    input_fingerprint: str | None = None,
) -> tfx.dsl.Pipeline:
    """Builds the cascade pipeline (module docstring).

    Args:
      data_dir: raw logs in the RecFlow layout (e.g. from ``tfcascade.data.simulate``).
      pipeline_root: where TFX writes the artifacts.
      serving_dir: TF Serving's model base; models go to ``<serving_dir>/<model_name>/<v>/``.
      spec: the cascade (default ``CascadeSpec.default(2)``): the examples are preprocessed for
        its number of stages, the Trainer trains it, and the validator evaluates the trained
        model at its cuts.
      config: how the Trainer trains (``tfcascade.training.TrainConfig``; default
        ``TrainConfig()``); its ``steps_per_epoch`` is also the Trainer's ``TrainArgs``.
      pipeline_name / model_name: names of the pipeline (ML Metadata context) and served model.
      eval_days: days held out for the eval split.
      min_joint_recall, tolerance, baselines, margin: the blessing rule
        (``tfcascade.components.blessing``): beat each naive ranker in ``baselines`` by more
        than ``margin``, stay within ``tolerance`` of the latest blessed model, and clear
        ``min_joint_recall`` when it is not None.
      slice_features: user features the validator slices its metrics by.
      eval_batch_size: the validator's batch size.
      metadata_connection_config: ML Metadata connection (None: the orchestrator's default).
      beam_pipeline_args: arguments for the Beam components (default: DirectRunner, in memory).
      enable_cache: reuse the outputs of components whose inputs and parameters did not change.
      input_fingerprint: digest of ``data_dir`` (default: computed from its files).

    Returns:
      The ``tfx.dsl.Pipeline``.

    Raises:
      TypeError: ``spec`` or ``config`` is not a CascadeSpec / TrainConfig.
      ValueError: a bad argument, naming it.
    """
    spec = CascadeSpec.default() if spec is None else spec
    config = TrainConfig() if config is None else config
    if not isinstance(spec, CascadeSpec):
        raise TypeError(f"spec must be a CascadeSpec, got spec={spec!r}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got config={config!r}")

    example_gen = RecFlowExampleGen(
        input_dir=_absolute(data_dir),
        stages=spec.num_stages,
        eval_days=eval_days,
        input_fingerprint=input_fingerprint,
    ).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id(STATISTICS_GEN)
    # Lists are 40 items long in train and 200 in eval: no fixed shapes in the schema.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
    ).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    trainer = tfx.components.Trainer(
        run_fn="tfcascade.components.trainer_module.run_fn",
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=config.steps_per_epoch or 0),
        eval_args=tfx.proto.EvalArgs(num_steps=0),
        custom_config=trainer_module.custom_config(config, spec, code_fingerprint()),
    ).with_id(TRAINER)
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER)
    validator = JointRecallValidator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"],
        baseline_blessing=resolver.outputs["model_blessing"],
        min_joint_recall=min_joint_recall,
        tolerance=tolerance,
        baselines=tuple(baselines),
        margin=margin,
        slice_features=tuple(slice_features),
        batch_size=eval_batch_size,
    ).with_id(VALIDATOR)
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=validator.outputs["blessing"],
        push_destination=push_destination(_absolute(serving_dir), model_name),
    ).with_id(PUSHER)

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen, statistics_gen, schema_gen, example_validator, trainer, resolver,
            validator, pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or ["--direct_num_workers=1"]),
    )
