"""The distribution strategy of a training run, from the environment (``TF_CONFIG``).

A cluster of two or more workers (``{"cluster": {"worker": [...]}, "task": {...}}``, optionally
with a ``chief``) trains under ``tf.distribute.MultiWorkerMirroredStrategy``: every worker holds
a copy of the model, each global batch is split across the workers and the gradients are
all-reduced, so the result is that of one worker at the same global batch. The chief (the
``chief`` task, else worker 0) writes the model; the other workers write what Keras and the
checkpoint need them to write into a scratch folder that is removed at the end.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf


def cluster_from_environment() -> tuple[dict, dict]:
    """``(cluster, task)`` of ``TF_CONFIG`` (both empty without one).

    Raises:
      ValueError: ``TF_CONFIG`` is not JSON.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:80]!r}") from None
    return dict(config.get("cluster", {})), dict(config.get("task", {}))


def strategy_from_environment() -> tf.distribute.Strategy | None:
    """``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names two or more workers, else None.

    It must be created before TensorFlow runs any op in the process (TensorFlow configures
    its collective ops then), so call this first.

    Raises:
      ValueError: the cluster has parameter servers (train those with
        ``tf.distribute.ParameterServerStrategy`` and your own input function), or TensorFlow
        already ran ops in this process.
    """
    cluster, _ = cluster_from_environment()
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if cluster.get("ps"):
        raise ValueError("TF_CONFIG names parameter servers: tfcascade trains data-parallel with "
                         "MultiWorkerMirroredStrategy (a chief and/or workers only)")
    if workers < 2:
        return None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG ({err}); create it before "
                         "TensorFlow runs any op and pass it as strategy=") from None


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes of ``strategy``'s cluster (1 for a single-process strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (always, outside a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or num_workers(strategy) == 1:
        return True
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and not spec.get("chief")


def task_name(strategy: tf.distribute.Strategy) -> str:
    """``"<task type>-<index>"`` of this process (``"worker-0"`` outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return "worker-0"
    return f"{resolver.task_type}-{resolver.task_id}"


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of ``strategy`` (``MultiWorkerMirroredStrategy``, not its implementation
    class ``CollectiveAllReduceStrategy``)."""
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return type(strategy).__name__


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line saying how this process trains, e.g. ``training on 2 workers
    (MultiWorkerMirroredStrategy), this one is worker-0 (chief)``."""
    if num_workers(strategy) == 1:
        return f"training in one process ({strategy_name(strategy)})"
    return (f"training on {num_workers(strategy)} workers ({strategy_name(strategy)}), this one is "
            f"{task_name(strategy)}{' (chief)' if is_chief(strategy) else ''}")
