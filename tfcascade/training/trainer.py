"""Train, save, load and evaluate a CascadeModel on preprocessed data."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

import tensorflow as tf

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.data.fingerprint import require_same_data
from tfcascade.data.tfdata import EmptySplitError, dataset_has_examples, load_metadata, make_dataset
from tfcascade.models.cascade import CascadeModel, build_cascade
from tfcascade.models.spec import CascadeSpec
from tfcascade.training.callbacks import StepTimer
from tfcascade.training.config import TrainConfig, resolve
from tfcascade.training.distribution import (
    describe,
    is_chief,
    is_parameter_server,
    num_parameter_servers,
    num_workers,
    strategy_from_environment,
    strategy_name,
    task_name,
)
from tfcascade.training.run_state import (
    BACKUP_DIR,
    RunProgress,
    prepare_run,
    run_identity,
    write_run,
)

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_PREFIX = os.path.join("checkpoints", "final")


def train(data_dir: str, model_dir: str, config: TrainConfig | None = None, spec: CascadeSpec | None = None, *,
          strategy: tf.distribute.Strategy | None = None, train_files: Sequence[str] | None = None,
          eval_files: Sequence[str] | None = None, callbacks: Sequence[keras.callbacks.Callback] = (),
          verbose: int | str = "auto", restart: bool = False, **options) -> dict:
    """Trains the cascade ``spec`` as ``config`` says (Adam, one pass by default, as the LCRON setup,
    arXiv 2503.09492) and evaluates it.

    Writes ``model_dir/config.json`` (``CascadeModel.get_config``), ``checkpoints/``,
    TensorBoard logs in ``logs/`` and ``metrics.json``. An interrupted run resumes from its last
    backup (``backup/``, written at every epoch end, or every ``config.backup_every`` steps) when
    called again with the same ``model_dir``, config and spec (Keras ``BackupAndRestore``; every
    strategy but ``OneDeviceStrategy``, at epoch ends only under ``ParameterServerStrategy``);
    others are refused (``run_state.RunMismatchError``) unless ``restart``. The final checkpoint is written under a temporary name and renamed before the
    backup is deleted, so a kill at any moment loses at most the epoch in progress; steps and
    seconds in ``metrics.json`` add up over resumes.

    Args:
      data_dir: the preprocessing output (``metadata.json``, ``train/``, ``eval/``).
      model_dir: where everything is written.
      config: how to train (default ``TrainConfig()``).
      spec: the cascade to train (default ``CascadeSpec.default(2)``); its number of stages
        must be the one the data was preprocessed for. Every stage brings its own callbacks
        and reports (``StageModel.training_callbacks`` / ``training_metrics``: a TARQ stage
        gets a ``CodebookMonitor`` and reports ``tarq_utilisation``).
      strategy: a ``tf.distribute`` strategy (default: the one ``TF_CONFIG`` asks for,
        ``training.distribution.strategy_from_environment``, else the current one). Under
        ``MultiWorkerMirroredStrategy`` ``config.batch_size`` is the global batch, the chief
        writes ``model_dir`` and the other workers a scratch folder they remove at the end, and
        every worker must be given the same ``model_dir``. Under ``ParameterServerStrategy``
        this process is the coordinator: each step is one worker's batch of
        ``config.batch_size`` (each worker reads its input from :func:`worker_dataset_fn`),
        ``config.steps_per_epoch`` is required, ``model_dir`` and the data must be absolute
        paths or URLs (the parameter servers write their checkpoint shards, the workers read
        the data), the chief evaluates the written model, and batch-level callbacks are refused.
      train_files, eval_files: explicit TFRecord files (the TFX Trainer passes them).
      callbacks: more Keras callbacks for ``fit``.
      verbose: Keras' ``fit`` verbosity.
      restart: start over even when ``model_dir`` holds an interrupted run's backup.
      **options: the keyword form (``training.config.resolve``): ``TrainConfig`` fields (and
        ``temperature``) override those of ``config``; ``stages`` and ``stage_models`` (stage
        kinds) describe the spec when none is given.

    Returns:
      The evaluation metrics plus the config's options, the spec's fields and ``stages``,
      ``train_step_ms`` (None under ``ParameterServerStrategy``), ``train_seconds`` and
      ``steps`` (optimizer updates, summed over resumes), ``steps_this_run``, ``resumed``,
      ``strategy``, ``num_workers``, ``num_parameter_servers``, ``sharded_variables`` (under
      ``ParameterServerStrategy``: :func:`sharded_variables`), ``last_epoch`` (Keras' training
      logs of the last epoch: the streaming metrics over it, and its last batch's loss) and
      what the stages report.

    Raises:
      ValueError: a bad option (before any work), data of another number of stages, an
        option ``ParameterServerStrategy`` cannot honour, or workers of a data-parallel run
        that would resume different backups (each given its own ``model_dir``).
    """
    config, spec = resolve(config, spec, **options)
    # First: a multi-worker strategy must exist before TensorFlow runs any op.
    strategy = strategy or strategy_from_environment() or tf.distribute.get_strategy()
    coordinated = is_parameter_server(strategy)
    if coordinated:
        _require_parameter_server_options(config, model_dir, list(train_files) if train_files else data_dir)
    chief = is_chief(strategy)
    if num_workers(strategy) > 1 or coordinated:
        log.info("%s", describe(strategy))
    out_dir = model_dir if chief else os.path.join(model_dir, f".{task_name(strategy)}-scratch")
    meta = load_metadata(data_dir)
    missing = [f for f in F.USER_FEATURES + F.ITEM_FEATURES if f not in meta.get("vocab_sizes", {})]
    if missing:
        raise ValueError(f"data_dir={data_dir!r} has no vocabulary for {missing}: it was preprocessed by an earlier "
                         "tfcascade, before these features; run `tfcascade preprocess` again")
    if int(meta.get("stages", spec.num_stages)) != spec.num_stages:
        raise ValueError(f"data_dir={data_dir!r} was preprocessed for stages={meta['stages']}, "
                         f"got stages={spec.num_stages}")
    train_source = list(train_files) if train_files else data_dir
    eval_source = list(eval_files) if eval_files else data_dir
    _require_splits(train_source, eval_source)
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if tf.io.gfile.exists(config_path):  # a rerun resumes the backup: only on the same data
        require_same_data(_read_json(config_path).get("data_fingerprint"), meta, data_dir, "resume training")
    identity = run_identity(config, spec, meta.get("fingerprint"))
    # With restart the chief drops the backup; the other workers must not read it meanwhile.
    prior_steps, prior_seconds = (0, 0.0) if restart and not chief else prepare_run(model_dir, identity,
                                                                                    restart and chief)
    if num_workers(strategy) > 1 and not coordinated:
        _require_one_start(strategy, prior_steps, model_dir)
    keras.utils.set_random_seed(config.seed)
    tf.io.gfile.makedirs(out_dir)
    with strategy.scope():
        model = build_cascade(meta, spec, loss=config.loss, embedding_dim=config.embedding_dim,
                              loss_options=config.loss_options, seed=config.seed,
                              initialization=config.initialization)
        model.compile(optimizer=keras.optimizers.Adam(config.lr, epsilon=config.adam_epsilon))
    if num_workers(strategy) > 1 and not coordinated:
        # Keras' "auto" sums each logged value over the workers; the metrics are already
        # aggregated over the cluster (their state is summed on read), so a sum would report
        # twice the joint recall on two workers. The logged loss is then the first worker's.
        model.distribute_reduction_method = "first"
    model.save_config(os.path.join(out_dir, CONFIG_FILE))
    train_ds = make_dataset(train_source, "train", config.batch_size, shuffle=True, num_epochs=1, seed=config.seed,
                            sampled_negatives=config.sampled_negatives, negative_draw=config.negative_draw)
    with strategy.scope():  # BackupAndRestore restores into built weights and optimizer slots
        model({name: value for name, value in next(iter(train_ds.take(1))).items() if name != "label"})
    stage_callbacks = model.training_callbacks(config.to_dict())
    if coordinated:  # Keras runs no batch-level callback under ParameterServerStrategy
        _refuse_batch_callbacks([*stage_callbacks, *callbacks])
    timer = None if coordinated else StepTimer()
    progress = (_EpochProgress if coordinated else RunProgress)(out_dir, identity, prior_steps, prior_seconds,
                                                                config.backup_every)
    backup = [] if isinstance(strategy, tf.distribute.OneDeviceStrategy) else [  # BackupAndRestore refuses it
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, BACKUP_DIR), save_freq=config.backup_every,
                                         delete_checkpoint=False)]  # deleted once the final checkpoint exists
    cbs = [*stage_callbacks, *backup, progress,
           keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch" if coordinated else 10),
           *([timer] if timer else []), *callbacks]
    if coordinated:  # every worker makes its own input from this function
        train_input = keras.utils.experimental.DatasetCreator(
            worker_dataset_fn(train_source, config, num_workers(strategy)))
    else:
        train_input = train_ds.repeat() if config.steps_per_epoch else train_ds
    model.fit(train_input, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, callbacks=cbs,
              verbose=verbose)
    seconds = progress.seconds
    _write_final_checkpoint(model, out_dir)  # every worker: saving reads all-reduced variables
    if chief and tf.io.gfile.exists(os.path.join(model_dir, BACKUP_DIR)):
        tf.io.gfile.rmtree(os.path.join(model_dir, BACKUP_DIR))
    write_run(out_dir, identity, "finished", progress.steps, seconds)
    # Under ParameterServerStrategy the chief evaluates the written model itself (the workers
    # only run scheduled steps): the same numbers as the trained model, from the final checkpoint.
    metrics = evaluate_model(load_model(out_dir) if coordinated else model, eval_source, config.eval_batch_size)
    metrics.update(config.to_dict(), **spec.get_config(), stages=spec.num_stages,
                   train_step_ms=timer.median_ms if timer else None, train_seconds=round(seconds, 3),
                   steps=progress.steps, steps_this_run=progress.steps_this_run, resumed=prior_steps > 0,
                   strategy=strategy_name(strategy), num_workers=num_workers(strategy),
                   num_parameter_servers=num_parameter_servers(strategy), last_epoch=progress.last_epoch_logs,
                   **model.training_metrics())
    if coordinated:
        metrics["sharded_variables"] = sharded_variables(model)
    with tf.io.gfile.GFile(os.path.join(out_dir, METRICS_FILE), "w") as fh:
        fh.write(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if not chief:
        tf.io.gfile.rmtree(out_dir)
        backup = os.path.join(model_dir, BACKUP_DIR)
        if tf.io.gfile.isdir(backup) and not tf.io.gfile.listdir(backup):
            tf.io.gfile.rmtree(backup)  # the chief keeps the backup; this worker's own folder is empty
    log.info("trained %s (%d stages): %s", config.loss, spec.num_stages, metrics)
    return metrics


def worker_dataset_fn(source, config: TrainConfig, workers: int) -> Callable[[tf.distribute.InputContext],
                                                                               tf.data.Dataset]:
    """The input function every worker of a ``ParameterServerStrategy`` run calls to make its
    own training input.

    Every worker builds the same seeded, shuffled stream of the train split's batches
    (``make_dataset``), repeated without end, and keeps every ``workers``-th batch, starting at
    its own index (``tf.distribute.coordinator.experimental_get_current_worker_index``): no two
    workers train on the same batch, and while they keep pace the run's first ``steps`` batches
    are the single-process run's first ``steps`` batches. Each worker reads (and parses) the
    whole stream, so the input costs every worker ``workers`` times the batches it trains on.

    Args:
      source: the train split (a preprocessing folder or a list of TFRecord files); every
        worker must be able to read it at the same path (a shared file system or GCS).
      config: the run's options (batch size, seed, sampled negatives).
      workers: the cluster's ``worker`` tasks.

    Returns:
      ``dataset_fn(input_context) -> tf.data.Dataset`` for ``DatasetCreator``.
    """
    # make_dataset reads an example eagerly (the list sizes), which a function traced for the
    # workers cannot: the pipeline is built here, on the chief, and every worker rebuilds it from
    # its graph — what ClusterCoordinator.create_per_worker_dataset does with a tf.data.Dataset.
    from tensorflow.python.distribute.coordinator import values as coordinator_values

    stream = make_dataset(source, "train", config.batch_size, shuffle=True, num_epochs=None, seed=config.seed,
                          sampled_negatives=config.sampled_negatives, negative_draw=config.negative_draw)
    graph = coordinator_values.serialize_dataset_to_graph(stream)

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        del input_context  # ParameterServerStrategy gives every worker the same one (one pipeline)
        ds = coordinator_values.deserialize_dataset_from_graph(graph, stream.element_spec)
        index = tf.cast(tf.distribute.coordinator.experimental_get_current_worker_index(), tf.int64)
        return ds.shard(workers, index)

    return dataset_fn


def sharded_variables(model: keras.Model) -> dict[str, list[str]]:
    """The variables ``ParameterServerStrategy`` split across parameter servers, and where.

    Args:
      model: a model built under ``ParameterServerStrategy``.

    Returns:
      ``{variable name: [device of shard 0, device of shard 1, ...]}`` (empty when nothing is
      split), e.g. ``{"cascade_model/ranking_din/emb_video_id/embeddings":
      ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]}``.
    """
    shards: dict[str, dict[int, str]] = {}
    for variable in model.variables:  # Keras lists a ShardedVariable's shards, named <name>/part_<i>
        base, part, index = variable.name.split(":")[0].rpartition("/part_")
        if part and index.isdigit():
            shards.setdefault(base, {})[int(index)] = variable.device
    return {name: [devices[i] for i in sorted(devices)] for name, devices in sorted(shards.items())}


def _require_one_start(strategy: tf.distribute.Strategy, prior_steps: int, model_dir: str) -> None:
    """Refuses a data-parallel run whose workers would resume different backups.

    Every worker restores the backup of its own ``model_dir``; given different folders (not one
    every worker sees), the chief would resume its backup while another worker started over, and
    the all-reduced updates would be applied to different weights. The workers exchange the
    steps they would resume from (one all-gather) and all refuse when those differ.

    Raises:
      ValueError: the workers would start from different steps, naming them.
    """
    value = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([prior_steps], tf.int64))
    starts = [int(x) for x in strategy.gather(value, axis=0).numpy()]
    if len(set(starts)) > 1:
        raise ValueError(f"the workers would resume from different steps {starts} (worker order): every worker "
                         f"must be given the same model_dir, on a file system they all see (GCS, NFS), got "
                         f"model_dir={model_dir!r} here")


def _require_parameter_server_options(config: TrainConfig, model_dir: str, train_source) -> None:
    """Refuses what a ``ParameterServerStrategy`` run cannot honour (one line, naming it).

    Args:
      config: the run's options (``steps_per_epoch`` must be given, ``backup_every`` must be
        ``"epoch"``).
      model_dir: must be absolute (or a URL): the parameter servers write their checkpoint
        shards there, from their own working directory.
      train_source: the train split (a folder or a list of files): absolute too, for the workers
        read it.

    Raises:
      ValueError: naming the option and its value.
    """
    if config.steps_per_epoch is None:
        raise ValueError("steps_per_epoch must be given under ParameterServerStrategy (every worker reads an "
                         "endless stream, so an epoch is a number of steps), got steps_per_epoch=None")
    if config.backup_every != "epoch":
        raise ValueError(f"backup_every must be 'epoch' under ParameterServerStrategy (Keras backs it up at "
                         f"epoch ends only; shorten steps_per_epoch instead), got backup_every={config.backup_every!r}")
    paths = [("model_dir", model_dir)] + [("train data", path) for path in (
        train_source if isinstance(train_source, (list, tuple)) else [train_source])]
    for name, path in paths:
        path = os.fspath(path)
        if "://" not in path and not os.path.isabs(path):
            raise ValueError(f"{name} must be an absolute path or a URL under ParameterServerStrategy (the "
                             f"{'parameter servers write' if name == 'model_dir' else 'workers read'} it from their "
                             f"own working directory), got {name}={path!r}")


def _refuse_batch_callbacks(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Refuses callbacks with batch-level hooks, which Keras does not run under
    ``ParameterServerStrategy`` (a TARQ stage's ``CodebookMonitor`` among them)."""
    batch_level = [type(cb).__name__ for cb in callbacks
                   if not getattr(cb, "_supports_tf_logs", False) and (
                       cb._implements_train_batch_hooks() or cb._implements_test_batch_hooks()
                       or cb._implements_predict_batch_hooks())]
    if batch_level:
        raise ValueError(f"callbacks={batch_level} have batch-level hooks, which Keras does not run under "
                         "ParameterServerStrategy (a TARQ stage brings one): train them under "
                         "MultiWorkerMirroredStrategy or in one process")


class _EpochProgress(RunProgress):
    """:class:`RunProgress` under ``ParameterServerStrategy``: Keras runs no batch-level callback
    there, so the steps are the optimizer's iterations (restored by the backup), read at every
    epoch end, once the coordinator has waited for every scheduled step."""

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end  # no batch hook

    def on_train_begin(self, logs=None):
        self._first_iteration = int(self.model.optimizer.iterations.numpy())
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.steps_this_run = int(self.model.optimizer.iterations.numpy()) - self._first_iteration
        super().on_epoch_end(epoch, logs)


def _write_final_checkpoint(model: CascadeModel, model_dir: str) -> None:
    """Writes ``checkpoints/final`` under a temporary prefix, then renames it into place
    (the index last: a checkpoint whose index exists is complete)."""
    final = os.path.join(model_dir, CHECKPOINT_PREFIX)
    partial = final + "-partial"
    tf.train.Checkpoint(model=model).write(partial)
    files = sorted(tf.io.gfile.glob(partial + ".*"), key=lambda f: f.endswith(".index"))
    for path in files:
        tf.io.gfile.rename(path, final + path[len(partial):], overwrite=True)


def load_model(model_dir: str) -> CascadeModel:
    """Rebuilds a trained cascade from ``config.json`` (``CascadeModel.from_config``; also one
    written before ``CascadeSpec``) and its final checkpoint."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in model_dir={model_dir!r}: not a trained cascade")
    model = CascadeModel.from_config(_read_json(path))
    status = tf.train.Checkpoint(model=model).read(os.path.join(model_dir, CHECKPOINT_PREFIX))
    status.expect_partial()
    return model


def evaluate_model(model: CascadeModel, source, batch_size: int = 256) -> dict:
    """Joint Recall@K@q_T and per-stage Recall/NDCG on the eval split (with sampled negatives)."""
    ds = make_dataset(source, "eval", batch_size, shuffle=False)
    if not getattr(model, "_is_compiled", False):
        model.compile()
    # Keras' evaluate runs the metric updates inside the replica context of any strategy.
    results = model.evaluate(ds, return_dict=True, verbose=0)
    out = {m.name: float(results[m.name]) for m in [model.joint_recall, *model.stage_metrics]}
    out["requests"] = int(model.joint_recall.count.numpy())
    return out


def evaluate(model_dir: str, data_dir: str, batch_size: int = 256) -> dict:
    """Loads ``model_dir`` and evaluates it on ``data_dir``'s eval split (refused unless
    ``data_dir`` is the preprocessing the model was trained on: ``require_data``)."""
    model = load_model(model_dir)
    require_data(model, data_dir, "evaluate")
    return evaluate_model(model, data_dir, batch_size)


def require_data(model: CascadeModel, data_dir: str, action: str) -> None:
    """Refuses ``data_dir`` unless its vocabulary fingerprint is the model's
    (``tfcascade.data.fingerprint.DataMismatchError``)."""
    require_same_data(model.data_fingerprint, load_metadata(data_dir), data_dir, action)


def _require_splits(train_source, eval_source) -> None:
    """Fails before any training step when a split has no example."""
    for source, split in ((train_source, "train"), (eval_source, "eval")):
        if not dataset_has_examples(source, split):
            raise EmptySplitError(f"the {split} split of {source!r} has no example: preprocess data "
                                  f"whose {split} days have usable requests (see its dead_letter/)")


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)
