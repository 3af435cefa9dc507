"""Train, save, load and evaluate a CascadeModel on preprocessed data."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import tensorflow as tf

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
    called again with the same ``model_dir``, config and spec (Keras ``BackupAndRestore``;
    default and Mirrored strategies); others are refused (``run_state.RunMismatchError``) unless
    ``restart``. The final checkpoint is written under a temporary name and renamed before the
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
      strategy: a ``tf.distribute`` strategy (default: ``MultiWorkerMirroredStrategy`` when
        ``TF_CONFIG`` names two or more workers (``training.distribution``), else the current
        one). Under a multi-worker strategy ``config.batch_size`` is the global batch, the chief
        writes ``model_dir`` and the other workers a scratch folder they remove at the end.
      train_files, eval_files: explicit TFRecord files (the TFX Trainer passes them).
      callbacks: more Keras callbacks for ``fit``.
      verbose: Keras' ``fit`` verbosity.
      restart: start over even when ``model_dir`` holds an interrupted run's backup.
      **options: the keyword form (``training.config.resolve``): ``TrainConfig`` fields (and
        ``temperature``) override those of ``config``; ``stages`` and ``stage_models`` (stage
        kinds) describe the spec when none is given.

    Returns:
      The evaluation metrics plus the config's options, the spec's fields and ``stages``,
      ``train_step_ms``, ``train_seconds`` and ``steps`` (summed over resumes),
      ``steps_this_run``, ``resumed``, ``strategy``, ``num_workers`` and what the stages report.

    Raises:
      ValueError: a bad option (before any work), or data of another number of stages.
    """
    config, spec = resolve(config, spec, **options)
    # First: a multi-worker strategy must exist before TensorFlow runs any op.
    strategy = strategy or strategy_from_environment() or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    if num_workers(strategy) > 1:
        log.info("%s", describe(strategy))
    out_dir = model_dir if chief else os.path.join(model_dir, f".{task_name(strategy)}-scratch")
    meta = load_metadata(data_dir)
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
    prior_steps, prior_seconds = prepare_run(model_dir, identity, restart and chief)
    keras.utils.set_random_seed(config.seed)
    tf.io.gfile.makedirs(out_dir)
    with strategy.scope():
        model = build_cascade(meta, spec, loss=config.loss, embedding_dim=config.embedding_dim,
                              loss_options=config.loss_options, seed=config.seed)
        model.compile(optimizer=keras.optimizers.Adam(config.lr))
    model.save_config(os.path.join(out_dir, CONFIG_FILE))
    train_ds = make_dataset(train_source, "train", config.batch_size, shuffle=True, num_epochs=1, seed=config.seed,
                            sampled_negatives=config.sampled_negatives, negative_draw=config.negative_draw)
    with strategy.scope():  # BackupAndRestore restores into built weights and optimizer slots
        model({name: value for name, value in next(iter(train_ds.take(1))).items() if name != "label"})
    timer = StepTimer()
    progress = RunProgress(out_dir, identity, prior_steps, prior_seconds, config.backup_every)
    backup = [] if isinstance(strategy, tf.distribute.OneDeviceStrategy) else [  # BackupAndRestore refuses it
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, BACKUP_DIR), save_freq=config.backup_every,
                                         delete_checkpoint=False)]  # deleted once the final checkpoint exists
    cbs = [*model.training_callbacks(config.to_dict()), *backup, progress,
           keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq=10), timer, *callbacks]
    if config.steps_per_epoch:
        train_ds = train_ds.repeat()
    model.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, callbacks=cbs, verbose=verbose)
    seconds = progress.seconds
    _write_final_checkpoint(model, out_dir)  # every worker: saving reads all-reduced variables
    if chief and tf.io.gfile.exists(os.path.join(model_dir, BACKUP_DIR)):
        tf.io.gfile.rmtree(os.path.join(model_dir, BACKUP_DIR))
    write_run(out_dir, identity, "finished", progress.steps, seconds)
    metrics = evaluate_model(model, eval_source, config.eval_batch_size)
    metrics.update(config.to_dict(), **spec.get_config(), stages=spec.num_stages, train_step_ms=timer.median_ms,
                   train_seconds=round(seconds, 3), steps=progress.steps, steps_this_run=progress.steps_this_run,
                   resumed=prior_steps > 0, strategy=strategy_name(strategy), num_workers=num_workers(strategy),
                   **model.training_metrics())
    with tf.io.gfile.GFile(os.path.join(out_dir, METRICS_FILE), "w") as fh:
        fh.write(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if not chief:
        tf.io.gfile.rmtree(out_dir)
        backup = os.path.join(model_dir, BACKUP_DIR)
        if tf.io.gfile.isdir(backup) and not tf.io.gfile.listdir(backup):
            tf.io.gfile.rmtree(backup)  # the chief keeps the backup; this worker's own folder is empty
    log.info("trained %s (%d stages): %s", config.loss, spec.num_stages, metrics)
    return metrics


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
