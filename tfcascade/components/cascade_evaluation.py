"""What the JointRecallValidator measures: a trained cascade on the eval split, sliced.

Metrics (LCRON, arXiv 2503.09492), for K ground-truth items and stage cuts q_1 ≥ … ≥ q_T:

- ``joint_recall``: Recall@K@q_T = |CS_out ∩ CS_gt| / K, CS_out = the cascade's output;
- ``stage_recall[i]``: Recall@K@q_i of stage i alone on the whole candidate list;
- ``ndcg[i]``: NDCG@K of stage i alone on the whole list (graded labels as gains);

each averaged over requests, overall and for every value of every slicing feature (user
features, one value per request). Beside them, ``baselines``: the expected joint recall, on
the same requests, of naive rankers that need no training (``tfcascade.metrics.expected_recall``,
ties broken at random):

- ``random``: every stage orders the candidates at random (min(q_T, n) / n per request);
- ``popularity``: every stage orders them by how often the item appears in the train split's
  logged lists (items never logged tie at 0).

The pipeline's blessing asks a cascade to beat both. The numbers come from
``tfcascade.metrics``; this module only scores the eval split and groups requests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The naive rankers evaluate_cascade scores beside the cascade (module docstring).
BASELINES = ("random", "popularity")


def _metrics_for(
    labels: np.ndarray, stage_scores: Sequence[np.ndarray], mask: np.ndarray, k: int,
    qs: Sequence[int], baseline_scores: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    from tfcascade import metrics

    return {
        "baselines": {
            name: float(metrics.expected_recall(labels, scores, k, qs[-1], mask=mask))
            for name, scores in baseline_scores.items()
        },
        "num_requests": int(labels.shape[0]),
        "joint_recall": float(metrics.joint_recall(labels, list(stage_scores), k, list(qs),
                                                   mask=mask)),
        "stage_recall": [
            float(metrics.stage_recall(labels, scores, k, q, mask=mask))
            for scores, q in zip(stage_scores, qs, strict=True)
        ],
        "ndcg": [float(metrics.ndcg(labels, scores, k, mask=mask)) for scores in stage_scores],
    }


def sliced_metrics(
    labels: np.ndarray,
    stage_scores: Sequence[np.ndarray],
    mask: np.ndarray,
    k: int,
    qs: Sequence[int],
    slices: Mapping[str, np.ndarray] | None = None,
    value_names: Mapping[str, Sequence[str]] | None = None,
    baseline_scores: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Cascade metrics overall and per slice.

    Args:
      labels: graded labels [B, n] (``tfcascade.features``; padding -1).
      stage_scores: one [B, n] score array per stage, earliest stage first.
      mask: [B, n], 1 for real items.
      k: ground-truth size K.
      qs: items kept by each stage (same length as ``stage_scores``).
      slices: feature name -> [B] value (vocabulary index) of each request.
      value_names: feature name -> vocabulary (index -> raw value) used to name slices.
      baseline_scores: naive ranker name -> its [B, n] scores, used by every stage; their
        expected joint recall (ties broken at random) is reported as ``baselines``.

    Returns:
      ``{"k", "qs", "overall": {...}, "slices": {feature: {value: {...}}}}`` where each
      ``{...}`` holds ``num_requests``, ``joint_recall``, ``stage_recall``, ``ndcg`` and
      ``baselines`` (name -> expected joint recall).

    Raises:
      ValueError: shapes disagree, or ``qs`` does not have one entry per stage.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask)
    stage_scores = [np.asarray(s) for s in stage_scores]
    if labels.ndim != 2 or mask.shape != labels.shape:
        raise ValueError(f"labels and mask must be [B, n] alike, got labels.shape={labels.shape}"
                         f" and mask.shape={mask.shape}")
    if len(qs) != len(stage_scores):
        raise ValueError(f"qs must have one entry per stage ({len(stage_scores)}), got qs={qs!r}")
    baseline_scores = {name: np.asarray(s) for name, s in (baseline_scores or {}).items()}
    for name, scores in [(f"stage_scores[{i}]", s) for i, s in enumerate(stage_scores)] + [
            (f"baseline_scores[{n!r}]", s) for n, s in baseline_scores.items()]:
        if scores.shape != labels.shape:
            raise ValueError(f"{name}.shape={scores.shape} differs from labels.shape={labels.shape}")
    result: dict[str, Any] = {
        "k": int(k),
        "qs": [int(q) for q in qs],
        "overall": _metrics_for(labels, stage_scores, mask, k, qs, baseline_scores),
        "slices": {},
    }
    for feature, values in (slices or {}).items():
        values = np.asarray(values).reshape(-1)
        if values.shape[0] != labels.shape[0]:
            raise ValueError(f"slice feature {feature!r} has {values.shape[0]} values for "
                             f"{labels.shape[0]} requests")
        names = (value_names or {}).get(feature)
        per_value = {}
        for value in np.unique(values):
            rows = values == value
            name = _value_name(value, names)
            per_value[name] = _metrics_for(
                labels[rows], [s[rows] for s in stage_scores], mask[rows], k, qs,
                {n: s[rows] for n, s in baseline_scores.items()},
            )
        result["slices"][feature] = per_value
    return result


def _value_name(value: Any, names: Sequence[str] | None) -> str:
    index = int(value)
    if names is not None and 0 <= index < len(names):
        return str(names[index])
    return str(index)


def plot_slices(metrics: Mapping[str, Any], path: str) -> None:
    """Bar chart of joint recall per slice value, with the overall value, the naive rankers'
    (``baselines``) and the absolute threshold when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = metrics.get("slices", {})
    panels = max(1, len(slices))
    fig, axes = plt.subplots(1, panels, figsize=(4 + 3 * panels, 3.5), squeeze=False)
    overall = metrics["overall"]["joint_recall"]
    threshold = metrics.get("decision", {}).get("min_joint_recall")
    for ax, (feature, per_value) in zip(axes[0], slices.items(), strict=False):
        names = list(per_value)
        ax.bar(names, [per_value[n]["joint_recall"] for n in names], color="tab:blue")
        ax.axhline(overall, color="black", linestyle="--", label=f"overall {overall:.3f}")
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle=":", label=f"threshold {threshold:.3f}")
        for (name, value), color in zip(metrics["overall"].get("baselines", {}).items(),
                                        ("tab:gray", "tab:orange"), strict=False):
            ax.axhline(value, color=color, linestyle="-.", label=f"{name} {value:.3f}")
        ax.set_title(f"Joint Recall@{metrics['k']}@{metrics['qs'][-1]} by {feature}")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=45)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate_cascade(
    *,
    model_uri: str,
    examples_uri: str,
    slice_features: Sequence[str],
    k: int | None = None,
    qs: Sequence[int] | None = None,
    batch_size: int = 256,
    split: str = "eval",
) -> dict[str, Any]:
    """Scores the ``split`` of an Examples artifact with the Trainer's cascade; sliced metrics.

    Args:
      model_uri: the Trainer's Model artifact (the Keras cascade is in ``Format-Cascade/``).
      examples_uri: the RecFlowExampleGen's Examples artifact.
      slice_features: user features to slice by (each one value per request).
      k, qs: ground-truth size and per-stage cuts (default: the model's, its ``CascadeSpec``).
      batch_size: requests per scoring batch.
      split: which split to score.

    Returns:
      :func:`sliced_metrics`' dict.
    """
    import tensorflow as tf

    from tfcascade import data, training
    from tfcascade.components.trainer_module import cascade_model_dir

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise ValueError(f"no {split!r} examples under examples_uri={examples_uri!r}")
    model = training.load_model(cascade_model_dir(model_uri))
    training.require_data(model, examples_uri, "JointRecallValidator")
    qs, k = model.validate_cut(qs, k)
    collected: dict[str, list[np.ndarray]] = {}
    for features in data.make_dataset(files, batch_size=batch_size, shuffle=False):
        scores = stage_scores_of(model, features, len(qs))
        batch = {"label": features["label"], "mask": features["mask"], "video_id": features["video_id"]}
        batch.update({f"stage_{i}": s for i, s in enumerate(scores)})
        batch.update({f: features[f] for f in slice_features})
        for key, value in batch.items():
            collected.setdefault(key, []).append(np.asarray(value))
    arrays = {key: np.concatenate(parts) for key, parts in collected.items()}
    stages = [arrays[f"stage_{i}"] for i in range(len(qs))]
    value_names = {f: _vocabulary(examples_uri, f) for f in slice_features}
    counts = item_counts(examples_uri, batch_size=max(batch_size, 1024))
    return sliced_metrics(
        arrays["label"], stages, arrays["mask"], k, qs,
        slices={f: arrays[f] for f in slice_features},
        value_names={f: v for f, v in value_names.items() if v is not None},
        baseline_scores=dict(zip(BASELINES, (
            np.zeros(arrays["label"].shape),
            popularity_scores(counts, arrays["video_id"]),
        ), strict=True)),
    )


def item_counts(examples_uri: str, split: str = "train", batch_size: int = 1024) -> dict[str, np.ndarray]:
    """How often each item (``video_id`` index) appears in the logged lists of a split.

    Args:
      examples_uri: the RecFlowExampleGen's Examples artifact.
      split: the split to count (the train split: the eval split must not see itself).
      batch_size: requests read at a time.

    Returns:
      ``{"ids": sorted distinct video_id indices, "counts": their number of logged slots}``.

    Raises:
      ValueError: the split has no files.
    """
    import tensorflow as tf

    from tfcascade import data

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise ValueError(f"no {split!r} examples under examples_uri={examples_uri!r}")
    ids = [np.zeros(0, np.int64)]
    for features in data.make_dataset(files, batch_size=batch_size, shuffle=False):
        ids.append(np.asarray(features["video_id"])[np.asarray(features["mask"]) > 0])
    unique, counts = np.unique(np.concatenate(ids), return_counts=True)
    return {"ids": unique, "counts": counts}


def popularity_scores(counts: Mapping[str, np.ndarray], video_id: np.ndarray) -> np.ndarray:
    """Each candidate's logged count (:func:`item_counts`) as its score; 0 for unseen items."""
    video_id = np.asarray(video_id)
    ids, hits = np.asarray(counts["ids"]), np.asarray(counts["counts"])
    if ids.size == 0:
        return np.zeros(video_id.shape)
    at = np.clip(np.searchsorted(ids, video_id), 0, ids.size - 1)
    return np.where(ids[at] == video_id, hits[at], 0).astype(np.float64)


def stage_scores_of(model: Any, features: Mapping[str, Any], num_stages: int) -> list[np.ndarray]:
    """Each stage's [B, n] scores from a cascade, earliest stage first.

    Uses ``model.stage_scores(features)`` when the model has it, else the model's call output
    (a list / tuple of per-stage scores, or a dict whose values in insertion order are).

    Raises:
      ValueError: the model does not give ``num_stages`` score arrays.
    """
    if hasattr(model, "stage_scores"):
        outputs = model.stage_scores(features)
    else:
        outputs = model(features, training=False)
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    scores = [np.asarray(s) for s in outputs]
    if len(scores) != num_stages:
        raise ValueError(f"the cascade gave {len(scores)} stage score arrays, expected "
                         f"num_stages={num_stages} (one per entry of qs)")
    return scores


def _vocabulary(examples_uri: str, feature: str) -> list[str] | None:
    import tensorflow as tf

    path = os.path.join(examples_uri, "vocab", f"{feature}.txt")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return ["<unk>"] + [line.rstrip("\n") for line in f]
