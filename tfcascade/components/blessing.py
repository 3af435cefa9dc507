"""The blessing rule of the JointRecallValidator and the ML Metadata look-up of its baseline.

A candidate cascade is blessed (may be pushed to serving) only if its end-to-end Joint
Recall@K@q_T (LCRON, arXiv 2503.09492) on the eval split clears every bar that applies:

    blessed  <=>  JR(candidate) >  JR(b) + margin  for every naive ranker b   (beats the baselines)
             and  JR(candidate) >= JR(latest blessed model) - tolerance       (no regression)
             and  JR(candidate) >= min_joint_recall                           (optional absolute bar)

The naive rankers are scored on the same eval requests by the validator
(``tfcascade.components.cascade_evaluation``): ``random`` (a random order) and ``popularity``
(items ordered by how often they were logged in the train split). Beating them is what a model
must do on any dataset, where an absolute threshold fits one dataset only. The regression bar
is skipped while no model has been blessed yet; the latest blessed model's joint recall is the
one recorded on its ``ModelBlessing`` artifact in ML Metadata (custom property
``joint_recall``), i.e. measured by the validator run that blessed it.

This module needs neither TFX nor ML Metadata to import: the look-up works on any object with
the ``MetadataStore`` methods it calls, which keeps the rule testable against a fake store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Custom properties of a ModelBlessing artifact. ``blessed``, ``current_model(_id)`` and
# ``baseline_model(_id)`` are the names TFX's Evaluator writes and its Pusher and
# LatestBlessedModelStrategy read; the others are ours.
BLESSED_KEY = "blessed"
CURRENT_MODEL_KEY = "current_model"
CURRENT_MODEL_ID_KEY = "current_model_id"
BASELINE_MODEL_KEY = "baseline_model"
BASELINE_MODEL_ID_KEY = "baseline_model_id"
JOINT_RECALL_KEY = "joint_recall"
MIN_JOINT_RECALL_KEY = "min_joint_recall"
BASELINE_JOINT_RECALL_KEY = "baseline_joint_recall"
MARGIN_KEY = "margin"
# ``<name>_joint_recall``: each naive ranker's joint recall on the same eval split.
NAIVE_JOINT_RECALL_SUFFIX = "_joint_recall"
BLESSED_FILE_NAME = "BLESSED"
NOT_BLESSED_FILE_NAME = "NOT_BLESSED"
MODEL_BLESSING_TYPE = "ModelBlessing"


@dataclass(frozen=True)
class BlessingDecision:
    """The outcome of :func:`decide_blessing`, with the numbers it was taken on."""

    blessed: bool
    joint_recall: float
    min_joint_recall: float | None
    baseline_joint_recall: float | None
    tolerance: float
    naive_joint_recalls: dict[str, float] = field(default_factory=dict)
    margin: float = 0.0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "blessed": self.blessed,
            "joint_recall": self.joint_recall,
            "min_joint_recall": self.min_joint_recall,
            "baseline_joint_recall": self.baseline_joint_recall,
            "tolerance": self.tolerance,
            "naive_joint_recalls": dict(self.naive_joint_recalls),
            "margin": self.margin,
            "reasons": list(self.reasons),
        }


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {name}={value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a finite number in [0, 1], got {name}={value!r}")
    return value


def decide_blessing(
    joint_recall: float,
    min_joint_recall: float | None = None,
    baseline_joint_recall: float | None = None,
    tolerance: float = 0.0,
    *,
    naive_joint_recalls: Mapping[str, float] | None = None,
    margin: float = 0.0,
) -> BlessingDecision:
    """Applies the blessing rule (module docstring) to one candidate.

    Args:
      joint_recall: the candidate's Joint Recall@K@q_T on the eval split, in [0, 1].
      min_joint_recall: the absolute bar, in [0, 1]; None for none.
      baseline_joint_recall: joint recall of the latest blessed model, or None if there is none.
      tolerance: how far below the baseline the candidate may be and still be blessed, in [0, 1].
      naive_joint_recalls: naive ranker name -> its joint recall on the same eval split; the
        candidate must beat each by more than ``margin``.
      margin: how much better than every naive ranker the candidate must be, in [0, 1].

    Returns:
      A :class:`BlessingDecision`; ``reasons`` names each bar the candidate failed (empty when
      blessed).

    Raises:
      ValueError / TypeError: an argument is not a finite number in [0, 1].
    """
    joint_recall = _check_fraction("joint_recall", joint_recall)
    if min_joint_recall is not None:
        min_joint_recall = _check_fraction("min_joint_recall", min_joint_recall)
    tolerance = _check_fraction("tolerance", tolerance)
    margin = _check_fraction("margin", margin)
    if baseline_joint_recall is not None:
        baseline_joint_recall = _check_fraction("baseline_joint_recall", baseline_joint_recall)
    naive = {str(name): _check_fraction(f"naive_joint_recalls[{name!r}]", value)
             for name, value in (naive_joint_recalls or {}).items()}
    reasons = []
    for name, value in naive.items():
        if not joint_recall > value + margin:
            reasons.append(
                f"joint recall {joint_recall:.4f} does not beat the {name} ranker's {value:.4f} "
                f"by more than margin={margin:.4f}"
            )
    if min_joint_recall is not None and joint_recall < min_joint_recall:
        reasons.append(
            f"joint recall {joint_recall:.4f} is below the threshold min_joint_recall="
            f"{min_joint_recall:.4f}"
        )
    if baseline_joint_recall is not None and joint_recall < baseline_joint_recall - tolerance:
        reasons.append(
            f"joint recall {joint_recall:.4f} is below the latest blessed model's "
            f"{baseline_joint_recall:.4f} minus tolerance {tolerance:.4f}"
        )
    return BlessingDecision(
        blessed=not reasons,
        joint_recall=joint_recall,
        min_joint_recall=min_joint_recall,
        baseline_joint_recall=baseline_joint_recall,
        tolerance=tolerance,
        naive_joint_recalls=naive,
        margin=margin,
        reasons=tuple(reasons),
    )


def _custom_value(artifact: Any, key: str) -> Any:
    """A custom property of an MLMD ``Artifact`` proto or a TFX ``Artifact``; None if unset."""
    props = getattr(artifact, "custom_properties", None)
    if props is not None and not callable(props):  # metadata_store_pb2.Artifact
        if key not in props:
            return None
        value = props[key]
        kind = value.WhichOneof("value")
        return getattr(value, kind) if kind else None
    if artifact.has_custom_property(key):  # tfx.types.Artifact
        return artifact.get_custom_property(key)
    return None


def _creation_order(artifact: Any) -> tuple[int, int]:
    proto = getattr(artifact, "mlmd_artifact", artifact)
    return (int(getattr(proto, "create_time_since_epoch", 0)), int(getattr(proto, "id", 0)))


def latest_blessed(blessings: Iterable[Any]) -> Any | None:
    """The most recently created blessing with ``blessed == 1`` and a recorded joint recall.

    Args:
      blessings: ModelBlessing artifacts (MLMD protos or TFX ``Artifact`` objects).

    Returns:
      That artifact, or None if none qualifies.
    """
    candidates = [
        b for b in blessings
        if _custom_value(b, BLESSED_KEY) == 1 and _custom_value(b, JOINT_RECALL_KEY) is not None
    ]
    return max(candidates, key=_creation_order) if candidates else None


def blessing_joint_recall(blessing: Any | None) -> float | None:
    """The joint recall recorded on a ModelBlessing artifact (None for None or no record)."""
    if blessing is None:
        return None
    value = _custom_value(blessing, JOINT_RECALL_KEY)
    return None if value is None else float(value)


def latest_blessed_joint_recall(store: Any, pipeline_name: str | None = None) -> float | None:
    """Reads the latest blessed model's joint recall from an ML Metadata store.

    Args:
      store: an ``ml_metadata.MetadataStore`` (or anything with its ``get_artifacts_by_type``,
        ``get_context_by_type_and_name`` and ``get_artifacts_by_context`` methods).
      pipeline_name: restrict to the artifacts of this TFX pipeline (its ``pipeline`` context);
        None looks at every ModelBlessing in the store.

    Returns:
      The ``joint_recall`` custom property of the newest ModelBlessing with ``blessed == 1``,
      or None when no model has been blessed (in that pipeline).
    """
    blessings = store.get_artifacts_by_type(MODEL_BLESSING_TYPE)
    if pipeline_name is not None:
        context = store.get_context_by_type_and_name("pipeline", pipeline_name)
        if context is None:
            return None
        in_pipeline = {a.id for a in store.get_artifacts_by_context(context.id)}
        blessings = [b for b in blessings if b.id in in_pipeline]
    return blessing_joint_recall(latest_blessed(blessings))
