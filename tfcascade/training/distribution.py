"""The distribution strategy of a training run, from the environment (``TF_CONFIG``).

Two kinds of cluster train a cascade:

* **Data parallel** — two or more workers (``{"cluster": {"worker": [...]}, "task": {...}}``,
  optionally with a ``chief``) train under ``tf.distribute.MultiWorkerMirroredStrategy``: every
  worker holds a copy of the model, each global batch is split across the workers and the
  gradients are all-reduced, so the result is that of one worker at the same global batch. The
  chief (the ``chief`` task, else worker 0) writes the model; the other workers write what
  Keras and the checkpoint need them to write into a scratch folder that is removed at the end.
* **Parameter servers** — a ``chief``, one or more ``worker`` and one or more ``ps`` tasks train
  under ``tf.distribute.ParameterServerStrategy``: the variables live on the parameter servers
  (tables of many ids split across them by :class:`EmbeddingPartitioner`), the chief is the
  coordinator (it builds the model, schedules training steps on whichever worker is free, and
  writes ``model_dir``), and the workers and parameter servers only run a TensorFlow server
  (:func:`run_server`) until they are killed. Updates are asynchronous: every step is one
  worker's batch of ``batch_size`` requests applied as soon as it is computed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf

PARAMETER_SERVER = "ParameterServerStrategy"
# The fewest rows of a table's shard: 8192 rows of 8 float32 (the default embedding width) are
# 256 KiB, the smallest shard TensorFlow's parameter-server guide suggests. No dense kernel of
# the stage models has more than a few hundred rows, so only embedding tables of many ids split.
DEFAULT_MIN_SHARD_ROWS = 8192


class EmbeddingPartitioner(tf.distribute.experimental.partitioners.Partitioner):
    """How ``ParameterServerStrategy`` splits variables across the parameter servers.

    A table (a variable of rank 2 or more) of ``R`` rows is split along its rows into
    ``min(max_shards, R // min_shard_rows)`` shards (each on its own parameter server, each of at
    least ``min_shard_rows`` rows); a table of fewer than ``2 * min_shard_rows`` rows, and every
    vector and scalar, stays whole on one parameter server (they are placed round-robin). The
    criterion is rows, not bytes (``MinSizePartitioner``'s), because the variables worth splitting
    are embedding tables of many ids, while dense kernels of the same byte size (a 128×128 layer
    is as large as a table of 2,048 ids at width 8) gain nothing from being split and cost a
    concatenation at every step.

    Args:
      max_shards: the most shards of one table (the number of parameter servers).
      min_shard_rows: the fewest rows of a shard.

    Raises:
      ValueError: ``max_shards`` or ``min_shard_rows`` is not an integer > 0.
    """

    def __init__(self, max_shards: int, min_shard_rows: int = DEFAULT_MIN_SHARD_ROWS):
        for name, value in (("max_shards", max_shards), ("min_shard_rows", min_shard_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer > 0, got {name}={value!r}")
        self.max_shards, self.min_shard_rows = max_shards, min_shard_rows

    def __call__(self, shape, dtype, axis: int = 0) -> list[int]:
        """The number of shards along each axis of a variable of ``shape``.

        Args:
          shape: the variable's ``tf.TensorShape`` (or a list of ints).
          dtype: its dtype (unused: the criterion is rows).
          axis: the axis to split (only 0, the rows, is split).

        Returns:
          One count per axis: ``[shards, 1, ...]`` (all ones when the variable stays whole).
        """
        shape = tf.TensorShape(shape)
        partitions = [1] * (shape.rank or 0)
        if shape.rank is None or shape.rank < 2 or axis != 0 or shape[0] is None:
            return partitions
        partitions[0] = max(1, min(self.max_shards, int(shape[0]) // self.min_shard_rows))
        return partitions

    def __repr__(self) -> str:
        return f"EmbeddingPartitioner(max_shards={self.max_shards}, min_shard_rows={self.min_shard_rows})"


def free_loopback_ports(n: int) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 that are free now, for a cluster on one machine (tests,
    benchmarks); another process may still take one before the cluster binds it.

    Args:
      n: how many ports.

    Returns:
      ``n`` distinct port numbers.
    """
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_from_environment() -> tuple[dict, dict]:
    """``(cluster, task)`` of ``TF_CONFIG`` (both empty without one).

    Returns:
      The ``cluster`` dict (task type → addresses) and the ``task`` dict (``type``, ``index``).

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


def serves_cluster() -> bool:
    """Whether this process is a ``worker`` or ``ps`` task of a parameter-server cluster
    (``TF_CONFIG`` names ``ps`` tasks): it runs :func:`run_server`, not training.

    Raises:
      ValueError: ``TF_CONFIG`` is not JSON.
    """
    cluster, task = cluster_from_environment()
    return bool(cluster.get("ps")) and task.get("type") in ("worker", "ps")


def _check_parameter_server_cluster(cluster: dict, task: dict) -> None:
    """Refuses a parameter-server ``TF_CONFIG`` that ``ParameterServerStrategy`` cannot run."""
    counts = {job: len(cluster.get(job) or []) for job in ("chief", "worker", "ps")}
    if counts["chief"] != 1:
        raise ValueError(f"TF_CONFIG names parameter servers, so it needs exactly one 'chief' task (the "
                         f"coordinator), got chief={cluster.get('chief')!r}")
    if counts["worker"] < 1:
        raise ValueError(f"TF_CONFIG names parameter servers, so it needs at least one 'worker' task, "
                         f"got worker={cluster.get('worker')!r}")
    extra = sorted(set(cluster) - {"chief", "worker", "ps"})
    if extra:
        raise ValueError(f"TF_CONFIG of a parameter-server cluster names task types {extra}: only chief, "
                         "worker and ps are known")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in ("chief", "worker", "ps"):
        raise ValueError(f"TF_CONFIG task type must be chief, worker or ps, got type={kind!r}")
    if not (isinstance(index, int) and 0 <= index < counts[kind]):
        raise ValueError(f"TF_CONFIG task index must be 0..{counts[kind] - 1} for type={kind!r}, got index={index!r}")


def strategy_from_environment(min_shard_rows: int = DEFAULT_MIN_SHARD_ROWS) -> tf.distribute.Strategy | None:
    """The strategy ``TF_CONFIG`` asks for, else None.

    ``ParameterServerStrategy`` (with an :class:`EmbeddingPartitioner` over the parameter servers)
    when ``TF_CONFIG`` names ``ps`` tasks and this process is the ``chief``;
    ``MultiWorkerMirroredStrategy`` when it names two or more workers (``worker`` and ``chief``
    tasks) and no ``ps``; None for one worker or no ``TF_CONFIG``. It must be created before
    TensorFlow runs any op in the process (TensorFlow configures its collective ops, or its
    connection to the cluster, then), so call this first. ``ParameterServerStrategy`` connects
    to every worker and parameter server here, waiting for those not up yet.

    Args:
      min_shard_rows: the partitioner's fewest rows per shard (parameter servers only).

    Returns:
      The strategy, or None where one process trains alone.

    Raises:
      ValueError: a malformed cluster (naming what is wrong), this process being a ``worker``
        or ``ps`` task of a parameter-server cluster (those run :func:`run_server`), or
        TensorFlow already ran ops in this process.
    """
    cluster, task = cluster_from_environment()
    if cluster.get("ps"):
        _check_parameter_server_cluster(cluster, task)
        if task.get("type") != "chief":
            raise ValueError(f"TF_CONFIG task type={task.get('type')!r} of a parameter-server cluster runs a "
                             "TensorFlow server, not training: start it with `tfcascade train` (or "
                             "tfcascade.training.distribution.run_server()); only the chief trains")
        partitioner = EmbeddingPartitioner(len(cluster["ps"]), min_shard_rows)
        try:
            return tf.distribute.ParameterServerStrategy(
                tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot start ParameterServerStrategy from TF_CONFIG ({err}); create it before "
                             "TensorFlow runs any op and pass it as strategy=") from None
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers < 2:
        return None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG ({err}); create it before "
                         "TensorFlow runs any op and pass it as strategy=") from None


def run_server(announce: Callable[[str], None] | None = None, *, join: bool = True) -> tf.distribute.Server:
    """Runs this process's TensorFlow server of a parameter-server cluster (``TF_CONFIG``'s
    ``worker`` or ``ps`` task), which the chief's ``ParameterServerStrategy`` drives.

    A worker runs the training steps the chief schedules (reading its own input, see
    ``training.train``), a parameter server holds its share of the variables. Neither writes
    anything; both serve until the process is killed (the chief does not stop them).

    Args:
      announce: called with one line saying what the process is, once the server listens
        (``serving ps-0 of a parameter-server cluster (1 chief, 2 workers, 1 parameter
        server) on 127.0.0.1:2223 until killed``).
      join: block until the server ends (that is, until the process is killed); False returns
        the started server (tests).

    Returns:
      The started ``tf.distribute.Server`` (only when ``join`` is False).

    Raises:
      ValueError: ``TF_CONFIG`` does not make this process a worker or ps of a parameter-server
        cluster, naming what it is.
    """
    cluster, task = cluster_from_environment()
    if not cluster.get("ps") or task.get("type") not in ("worker", "ps"):
        raise ValueError(f"TF_CONFIG does not make this process a worker or ps of a parameter-server cluster "
                         f"(task={task!r}, cluster task types={sorted(cluster)!r})")
    _check_parameter_server_cluster(cluster, task)
    # As TensorFlow's parameter-server guide: a server whose peer is down answers its caller
    # with an error at once instead of retrying the call for ever.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc", start=True)
    if announce is not None:
        address = cluster[task["type"]][resolver.task_id]
        announce(f"serving {resolver.task_type}-{resolver.task_id} of a parameter-server cluster "
                 f"({_cluster_size(cluster)}) on {address} until killed")
    if join:
        server.join()
    return server


def _cluster_size(cluster: dict) -> str:
    """``1 chief, 2 workers, 1 parameter server``."""
    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    return ", ".join([count(len(cluster.get("chief") or []), "chief", "chiefs"),
                      count(len(cluster.get("worker") or []), "worker", "workers"),
                      count(len(cluster.get("ps") or []), "parameter server", "parameter servers")])


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a ``ParameterServerStrategy`` (the chief coordinates)."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def _resolver(strategy: tf.distribute.Strategy):
    """The strategy's cluster resolver (``ParameterServerStrategy`` keeps it on the strategy,
    not on ``extended`` where ``Strategy.cluster_resolver`` looks), or None."""
    return getattr(strategy, "cluster_resolver", None) or getattr(strategy, "_cluster_resolver", None)


def _cluster_spec(strategy: tf.distribute.Strategy) -> dict:
    resolver = _resolver(strategy)
    return {} if resolver is None else resolver.cluster_spec().as_dict()


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes that compute training steps: the workers and chief of a data-parallel cluster,
    the ``worker`` tasks of a parameter-server cluster (1 for a single-process strategy)."""
    spec = _cluster_spec(strategy)
    if is_parameter_server(strategy):
        return len(spec.get("worker", []))
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def num_parameter_servers(strategy: tf.distribute.Strategy) -> int:
    """The ``ps`` tasks of ``strategy``'s cluster (0 but for ``ParameterServerStrategy``)."""
    return len(_cluster_spec(strategy).get("ps", [])) if is_parameter_server(strategy) else 0


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (always, outside a multi-worker cluster;
    the coordinator under ``ParameterServerStrategy``)."""
    resolver = _resolver(strategy)
    if is_parameter_server(strategy):
        return True  # only the chief creates the strategy (the others run a server)
    if resolver is None or num_workers(strategy) == 1:
        return True
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and not spec.get("chief")


def task_name(strategy: tf.distribute.Strategy) -> str:
    """``"<task type>-<index>"`` of this process (``"worker-0"`` outside a cluster)."""
    resolver = _resolver(strategy)
    if resolver is None or resolver.task_type is None:
        return "worker-0"
    return f"{resolver.task_type}-{resolver.task_id}"


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of ``strategy`` (``MultiWorkerMirroredStrategy``, not its implementation
    class ``CollectiveAllReduceStrategy``; ``ParameterServerStrategy``, not
    ``ParameterServerStrategyV2``)."""
    if is_parameter_server(strategy):
        return PARAMETER_SERVER
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return type(strategy).__name__


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line saying how this process trains, e.g. ``training on 2 workers
    (MultiWorkerMirroredStrategy), this one is worker-0 (chief)`` or ``training on 2 workers
    and 1 parameter server (ParameterServerStrategy), this one is chief-0 (coordinator)``."""
    if is_parameter_server(strategy):
        ps = num_parameter_servers(strategy)
        return (f"training on {num_workers(strategy)} worker{'s' if num_workers(strategy) != 1 else ''} and "
                f"{ps} parameter server{'s' if ps != 1 else ''} ({PARAMETER_SERVER}), this one is "
                f"{task_name(strategy)} (coordinator)")
    if num_workers(strategy) == 1:
        return f"training in one process ({strategy_name(strategy)})"
    return (f"training on {num_workers(strategy)} workers ({strategy_name(strategy)}), this one is "
            f"{task_name(strategy)}{' (chief)' if is_chief(strategy) else ''}")
