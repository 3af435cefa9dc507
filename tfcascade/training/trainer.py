"""Train, save, load and evaluate a CascadeModel on preprocessed data."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.data.fingerprint import require_same_data
from tfcascade.data.tfdata import EmptySplitError, dataset_has_examples, load_metadata, make_dataset
from tfcascade.models.cascade import CascadeModel, build_cascade
from tfcascade.models.tarq import TARQ
from tfcascade.training.callbacks import CodebookMonitor, StepTimer
from tfcascade.training.distribution import (
    describe,
    is_chief,
    num_workers,
    strategy_from_environment,
    strategy_name,
    task_name,
)
from tfcascade.training.run_state import BACKUP_DIR, RunProgress, prepare_run, write_run

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_PREFIX = os.path.join("checkpoints", "final")


def _loss_options(loss: str, temperature: float | None, loss_options: Mapping | None) -> dict:
    options = dict(loss_options or {})
    if temperature is not None:
        options["temperature"] = float(temperature)
    return options


def train(data_dir: str, model_dir: str, loss: str = "lcron", stages: int = 2, epochs: int = 1,
          batch_size: int = 1024, lr: float = 1e-2, temperature: float | None = None, seed: int = 0,
          strategy: tf.distribute.Strategy | None = None, loss_options: Mapping | None = None,
          train_files: Sequence[str] | None = None, eval_files: Sequence[str] | None = None,
          steps_per_epoch: int | None = None, embedding_dim: int = 8, eval_batch_size: int = 256,
          verbose: int | str = "auto", callbacks: Sequence[keras.callbacks.Callback] = (),
          backup_every: int | str = "epoch", stage_models: Sequence[str] | None = None,
          codebook_reset_every: int = 50, sampled_negatives: int = 0, negative_draw: str = "items",
          restart: bool = False) -> dict:
    """Trains a cascade (Adam, one pass by default, as the LCRON setup, arXiv 2503.09492) and evaluates it.

    Writes ``model_dir/config.json``, ``checkpoints/``, TensorBoard logs in ``logs/`` and
    ``metrics.json``. An interrupted run resumes from its last backup (``backup/``, written at
    every epoch end, or every ``backup_every`` steps) when called again with the same
    ``model_dir`` and the same options (Keras ``BackupAndRestore``; default and Mirrored
    strategies); other options are refused (``run_state.RunMismatchError``) unless
    ``restart``. The final checkpoint is written under a temporary name and renamed before the
    backup is deleted, so a kill at any moment loses at most the epoch in progress; steps and
    seconds in ``metrics.json`` add up over resumes.

    Args:
      data_dir: the preprocessing output (``metadata.json``, ``train/``, ``eval/``).
      model_dir: where everything is written.
      loss: a ``tfcascade.losses`` name; ``temperature`` and ``loss_options`` its options.
      stages: 2 or 3; must match how the data was preprocessed.
      epochs, batch_size, lr, seed: the usual; ``steps_per_epoch`` caps each epoch.
      strategy: a ``tf.distribute`` strategy (default: ``MultiWorkerMirroredStrategy`` when
        ``TF_CONFIG`` names two or more workers (``training.distribution``), else the current
        one). Under a multi-worker strategy ``batch_size`` is the global batch, the chief writes
        ``model_dir`` and the other workers a scratch folder they remove at the end.
      train_files, eval_files: explicit TFRecord files (the TFX Trainer passes them).
      stage_models: stage kinds, earliest first (default DSSM → DIN / DSSM → MLP → DIN);
        e.g. ``("dssm", "tarq", "din")``. Every TARQ stage gets a ``CodebookMonitor``
        (k-means start, dead-code reset every ``codebook_reset_every`` batches) and its final
        codebook utilisation per level is reported as ``tarq_utilisation``.
      sampled_negatives: m > 0 appends m negatives sampled from the batch's other items to
        every training list (``tfcascade.data.negatives``), as the evaluation lists append
        negatives sampled from other requests; ``negative_draw`` ``items`` (distinct items of
        the batch) or ``slots`` (other requests' slots, as the DFTopK reference code).
      restart: start over even when ``model_dir`` holds an interrupted run's backup.

    Returns:
      The evaluation metrics plus ``train_step_ms``, ``train_seconds`` and ``steps`` (summed
      over resumes), ``steps_this_run`` and ``resumed``.
    """
    validate_options(epochs=epochs, batch_size=batch_size, lr=lr, embedding_dim=embedding_dim,
                     steps_per_epoch=steps_per_epoch, eval_batch_size=eval_batch_size)
    # First: a multi-worker strategy must exist before TensorFlow runs any op.
    strategy = strategy or strategy_from_environment() or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    if num_workers(strategy) > 1:
        log.info("%s", describe(strategy))
    out_dir = model_dir if chief else os.path.join(model_dir, f".{task_name(strategy)}-scratch")
    meta = load_metadata(data_dir)
    if int(meta.get("stages", stages)) != stages:
        raise ValueError(f"data_dir={data_dir!r} was preprocessed for stages={meta['stages']}, "
                         f"got stages={stages}")
    _require_splits(list(train_files) if train_files else data_dir, list(eval_files) if eval_files else data_dir)
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if tf.io.gfile.exists(config_path):  # a rerun resumes the backup: only on the same data
        require_same_data(_read_json(config_path).get("data_fingerprint"), meta, data_dir, "resume training")
    options = _loss_options(loss, temperature, loss_options)
    identity = {"loss": loss, "loss_options": options, "stages": stages, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "embedding_dim": embedding_dim, "steps_per_epoch": steps_per_epoch,
                "stage_models": list(stage_models) if stage_models else None, "sampled_negatives": sampled_negatives,
                "negative_draw": negative_draw, "data_fingerprint": meta.get("fingerprint")}
    prior_steps, prior_seconds = prepare_run(model_dir, identity, restart and chief)
    keras.utils.set_random_seed(seed)
    tf.io.gfile.makedirs(out_dir)
    with strategy.scope():
        model = build_cascade(meta, stages=stages, loss=loss, embedding_dim=embedding_dim,
                              loss_options=options, seed=seed, stage_models=stage_models)
        model.compile(optimizer=keras.optimizers.Adam(lr))
    model.save_config(os.path.join(out_dir, CONFIG_FILE))
    train_ds = make_dataset(list(train_files) if train_files else data_dir, "train", batch_size,
                            shuffle=True, num_epochs=1, seed=seed, sampled_negatives=sampled_negatives,
                            negative_draw=negative_draw)
    with strategy.scope():  # BackupAndRestore restores into built weights and optimizer slots
        model({name: value for name, value in next(iter(train_ds.take(1))).items() if name != "label"})
    timer = StepTimer()
    tarq_stages = [stage for stage in model.stage_models if isinstance(stage, TARQ)]
    monitors = [CodebookMonitor(stage.quantizer, every=codebook_reset_every, seed=seed) for stage in tarq_stages]
    progress = RunProgress(out_dir, identity, prior_steps, prior_seconds, backup_every)
    backup = [] if isinstance(strategy, tf.distribute.OneDeviceStrategy) else [  # BackupAndRestore refuses it
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, BACKUP_DIR), save_freq=backup_every,
                                         delete_checkpoint=False)]  # deleted once the final checkpoint exists
    cbs = [*monitors, *backup, progress, keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq=10),
           timer, *callbacks]
    if steps_per_epoch:
        train_ds = train_ds.repeat()
    model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=cbs, verbose=verbose)
    seconds = progress.seconds
    _write_final_checkpoint(model, out_dir)  # every worker: saving reads all-reduced variables
    if chief and tf.io.gfile.exists(os.path.join(model_dir, BACKUP_DIR)):
        tf.io.gfile.rmtree(os.path.join(model_dir, BACKUP_DIR))
    write_run(out_dir, identity, "finished", progress.steps, seconds)
    metrics = evaluate_model(model, list(eval_files) if eval_files else data_dir, eval_batch_size)
    metrics.update(train_step_ms=timer.median_ms, train_seconds=round(seconds, 3), loss=loss,
                   stages=stages, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, steps=progress.steps,
                   steps_this_run=progress.steps_this_run, resumed=prior_steps > 0,
                   strategy=strategy_name(strategy), num_workers=num_workers(strategy),
                   stage_models=list(model.config()["stage_models"]), sampled_negatives=sampled_negatives,
                   negative_draw=negative_draw)
    if tarq_stages:
        metrics["tarq_utilisation"] = [float(u) for u in tarq_stages[0].quantizer.utilisation()]
    with tf.io.gfile.GFile(os.path.join(out_dir, METRICS_FILE), "w") as fh:
        fh.write(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if not chief:
        tf.io.gfile.rmtree(out_dir)
        backup = os.path.join(model_dir, BACKUP_DIR)
        if tf.io.gfile.isdir(backup) and not tf.io.gfile.listdir(backup):
            tf.io.gfile.rmtree(backup)  # the chief keeps the backup; this worker's own folder is empty
    log.info("trained %s (%d stages): %s", loss, stages, metrics)
    return metrics


def validate_options(epochs: int = 1, batch_size: int = 1024, lr: float = 1e-2, embedding_dim: int = 8,
                     steps_per_epoch: int | None = None, eval_batch_size: int = 256) -> None:
    """Refuses training options that cannot give a meaningful run, before any work is done.

    Raises:
      ValueError: naming the option and its value (lr must be finite and > 0; epochs,
        batch_size, embedding_dim, eval_batch_size and steps_per_epoch (when given) > 0).
    """
    try:
        lr_ok = math.isfinite(float(lr)) and float(lr) > 0
    except (TypeError, ValueError):
        lr_ok = False
    if not lr_ok:
        raise ValueError(f"lr must be a finite number > 0, got lr={lr!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("embedding_dim", embedding_dim),
                        ("eval_batch_size", eval_batch_size), ("steps_per_epoch", steps_per_epoch)):
        if value is None and name == "steps_per_epoch":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be an integer > 0, got {name}={value!r}")


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
    """Rebuilds a trained cascade from ``config.json`` and its final checkpoint."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in model_dir={model_dir!r}: not a trained cascade")
    config = _read_json(path)
    model = build_cascade(config["vocab_sizes"], stages=config["stages"], loss=config["loss"],
                          embedding_dim=config["embedding_dim"], loss_options=config["loss_options"],
                          qs=config["qs"], k=config["k"], stage_models=config["stage_models"],
                          data_fingerprint=config.get("data_fingerprint"))
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
    require_same_data(model.config().get("data_fingerprint"), load_metadata(data_dir), data_dir, action)


def _require_splits(train_source, eval_source) -> None:
    """Fails before any training step when a split has no example."""
    for source, split in ((train_source, "train"), (eval_source, "eval")):
        if not dataset_has_examples(source, split):
            raise EmptySplitError(f"the {split} split of {source!r} has no example: preprocess data "
                                  f"whose {split} days have usable requests (see its dead_letter/)")


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)
