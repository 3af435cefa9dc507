"""JointRecallValidator: evaluates a trained cascade end to end and blesses it for the Pusher.

The TFX ``Evaluator`` (TFMA) scores one model output per example; a cascade's quality is the
end-to-end Joint Recall@K@q_T of its stages chained with their top-q_i cuts (LCRON,
arXiv 2503.09492), which TFMA cannot express. This component:

1. loads the Trainer's cascade and scores every request of the eval split with each stage;
2. computes Joint Recall@K@q_T, each stage's Recall@K@q_i on the whole list and NDCG@K,
   overall and per value of each slicing feature (user features such as ``age``, ``gender``);
3. writes them as ``metrics.json`` (and ``joint_recall_by_slice.png``) into a
   ``ModelEvaluation`` artifact;
4. writes a ``ModelBlessing`` artifact the stock (or our atomic) Pusher understands
   (custom property ``blessed`` = 1 / 0, file ``BLESSED`` / ``NOT_BLESSED``, plus
   ``current_model_id`` so that ``LatestBlessedModelStrategy`` can find it later), blessed
   only when :func:`tfcascade.components.blessing.decide_blessing` says so: joint recall
   above each naive ranker's (``baselines``, scored on the same requests) by more than
   ``margin``, ≥ the latest blessed model's joint recall − ``tolerance``, and ≥
   ``min_joint_recall`` when that absolute bar is set.

The latest blessed model comes from ML Metadata through a ``Resolver`` with
``LatestBlessedModelStrategy`` wired to the optional ``baseline_model`` / ``baseline_blessing``
inputs (see ``tfcascade/pipelines/cascade_pipeline.py``); its joint recall is the ``joint_recall``
custom property recorded on its blessing by the validator run that blessed it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfcascade.components import blessing as bl
from tfcascade.components.cascade_evaluation import BASELINES

DEFAULT_SLICE_FEATURES = ("age", "gender")
DEFAULT_BASELINES = BASELINES
# How much a cascade must beat the naive rankers by, in Joint Recall@K@q_T: about two standard
# errors (0.0028 measured) of the per-request difference between a cascade and popularity over
# the simulator's small-preset eval split (2,000 requests); docs/pipeline.md has the numbers.
DEFAULT_MARGIN = 0.005
METRICS_FILE = "metrics.json"
PLOT_FILE = "joint_recall_by_slice.png"


class JointRecallValidatorSpec(ComponentSpec):
    """Inputs, outputs and parameters of :class:`JointRecallValidator`."""

    PARAMETERS = {
        # Absent: no absolute bar.
        "min_joint_recall": ExecutionParameter(type=float, optional=True),
        "tolerance": ExecutionParameter(type=float),
        # JSON list of naive ranker names (cascade_evaluation.BASELINES) to beat.
        "baselines": ExecutionParameter(type=str),
        "margin": ExecutionParameter(type=float),
        # Absent: the trained model's own (its CascadeSpec).
        "k": ExecutionParameter(type=int, optional=True),
        # JSON lists (ExecutionParameter has no list type that compiles for Kubeflow V2).
        "qs": ExecutionParameter(type=str, optional=True),
        "slice_features": ExecutionParameter(type=str),
        "batch_size": ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
        "baseline_blessing": ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True
        ),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def _optional_single(input_dict: dict[str, list[types.Artifact]], key: str):
    artifacts = input_dict.get(key) or []
    return artifacts[0] if artifacts else None


class JointRecallValidatorExecutor(base_executor.BaseExecutor):
    """Evaluates the cascade on the eval split, writes metrics and the blessing."""

    def Do(  # noqa: N802  (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        from tfcascade.components.cascade_evaluation import evaluate_cascade, plot_slices

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        baseline_model = _optional_single(input_dict, "baseline_model")
        baseline_blessing = _optional_single(input_dict, "baseline_blessing")
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])

        metrics = evaluate_cascade(
            model_uri=model.uri,
            examples_uri=examples.uri,
            k=None if exec_properties.get("k") is None else int(exec_properties["k"]),
            qs=json.loads(exec_properties["qs"]) if exec_properties.get("qs") else None,
            slice_features=json.loads(exec_properties["slice_features"]),
            batch_size=int(exec_properties["batch_size"]),
        )
        baseline_jr = bl.blessing_joint_recall(baseline_blessing)
        threshold = exec_properties.get("min_joint_recall")
        naive = metrics["overall"]["baselines"]
        decision = bl.decide_blessing(
            joint_recall=metrics["overall"]["joint_recall"],
            min_joint_recall=None if threshold is None else float(threshold),
            baseline_joint_recall=baseline_jr,
            tolerance=float(exec_properties["tolerance"]),
            naive_joint_recalls={name: naive[name] for name in json.loads(exec_properties["baselines"])},
            margin=float(exec_properties["margin"]),
        )
        metrics["decision"] = decision.as_dict()
        metrics["model"] = {"uri": model.uri, "id": model.id}
        metrics["baseline_model"] = (
            {"uri": baseline_model.uri, "id": baseline_model.id} if baseline_model else None
        )

        fileio.makedirs(evaluation.uri)
        with fileio.open(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
            f.write(json.dumps(metrics, indent=1, sort_keys=True))
        try:
            plot_slices(metrics, os.path.join(evaluation.uri, PLOT_FILE))
        except ImportError:  # matplotlib is optional for the pipeline
            logging.warning("matplotlib is not installed: no %s written", PLOT_FILE)

        _write_blessing(blessing, decision, model, baseline_model)
        logging.info(
            "JointRecallValidator: joint recall %.4f (naive rankers %s, margin %.4f, threshold %s, "
            "latest blessed %s) -> %s%s",
            decision.joint_recall, naive, decision.margin, decision.min_joint_recall, baseline_jr,
            "BLESSED" if decision.blessed else "NOT BLESSED",
            "" if decision.blessed else ": " + "; ".join(decision.reasons),
        )


def _write_blessing(
    blessing: types.Artifact,
    decision: bl.BlessingDecision,
    model: types.Artifact,
    baseline_model: types.Artifact | None,
) -> None:
    fileio.makedirs(blessing.uri)
    name = bl.BLESSED_FILE_NAME if decision.blessed else bl.NOT_BLESSED_FILE_NAME
    with fileio.open(os.path.join(blessing.uri, name), "w") as f:
        f.write(json.dumps(decision.as_dict()))
    blessing.set_int_custom_property(bl.BLESSED_KEY, int(decision.blessed))
    blessing.set_string_custom_property(bl.CURRENT_MODEL_KEY, model.uri)
    blessing.set_int_custom_property(bl.CURRENT_MODEL_ID_KEY, model.id)
    blessing.set_float_custom_property(bl.JOINT_RECALL_KEY, decision.joint_recall)
    if decision.min_joint_recall is not None:
        blessing.set_float_custom_property(bl.MIN_JOINT_RECALL_KEY, decision.min_joint_recall)
    blessing.set_float_custom_property(bl.MARGIN_KEY, decision.margin)
    for name, value in decision.naive_joint_recalls.items():
        blessing.set_float_custom_property(name + bl.NAIVE_JOINT_RECALL_SUFFIX, value)
    if baseline_model is not None:
        blessing.set_string_custom_property(bl.BASELINE_MODEL_KEY, baseline_model.uri)
        blessing.set_int_custom_property(bl.BASELINE_MODEL_ID_KEY, baseline_model.id)
    if decision.baseline_joint_recall is not None:
        blessing.set_float_custom_property(
            bl.BASELINE_JOINT_RECALL_KEY, decision.baseline_joint_recall
        )


class JointRecallValidator(base_component.BaseComponent):
    """TFX component: Joint Recall@K@q_T evaluation + blessing (module docstring).

    Args:
      examples: ``Examples`` with an ``eval`` split (from ``RecFlowExampleGen``).
      model: the Trainer's ``Model`` (``Format-Cascade/`` Keras cascade inside).
      min_joint_recall: absolute blessing threshold, in [0, 1]; None (default) for none.
      tolerance: allowed drop below the latest blessed model's joint recall, in [0, 1].
      baselines: the naive rankers (``random``, ``popularity``) the cascade must beat; () for
        none.
      margin: by how much it must beat each of them, in [0, 1].
      k: size of the ground-truth set (K); default: the trained model's (``CascadeSpec.k``).
      qs: items each stage keeps, earliest stage first; default: the trained model's
        (``CascadeSpec.qs``).
      slice_features: user features to slice the metrics by.
      baseline_model / baseline_blessing: the latest blessed model and its blessing
        (outputs of a ``LatestBlessedModelStrategy`` resolver); optional.
      batch_size: eval batch size.
    """

    SPEC_CLASS = JointRecallValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(JointRecallValidatorExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        min_joint_recall: float | None = None,
        tolerance: float = 0.01,
        baselines: Sequence[str] = DEFAULT_BASELINES,
        margin: float = DEFAULT_MARGIN,
        k: int | None = None,
        qs: Sequence[int] | None = None,
        slice_features: tuple[str, ...] | list[str] = DEFAULT_SLICE_FEATURES,
        baseline_model: types.BaseChannel | None = None,
        baseline_blessing: types.BaseChannel | None = None,
        batch_size: int = 256,
    ):
        # Checked here so that a bad value fails when the pipeline is built, not hours later.
        bl.decide_blessing(0.0, min_joint_recall, None, tolerance, margin=margin)
        if isinstance(baselines, str):
            baselines = [baselines]
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"baselines must be among {list(BASELINES)}, got baselines={list(baselines)!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive integer, got k={k!r}")
        if qs is not None:
            qs = [int(q) for q in qs]
            least = k or 1
            if not qs or any(q < least for q in qs) or any(a < b for a, b in zip(qs[:-1], qs[1:], strict=True)):
                raise ValueError(f"qs must be non-increasing and each >= k={least}, got qs={qs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got batch_size={batch_size!r}")
        super().__init__(
            spec=JointRecallValidatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                baseline_blessing=baseline_blessing,
                min_joint_recall=None if min_joint_recall is None else float(min_joint_recall),
                tolerance=float(tolerance),
                baselines=json.dumps(list(baselines)),
                margin=float(margin),
                k=k,
                qs=None if qs is None else json.dumps(qs),
                slice_features=json.dumps(list(slice_features)),
                batch_size=batch_size,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
