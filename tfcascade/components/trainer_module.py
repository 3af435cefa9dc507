"""The TFX Trainer's ``run_fn``: trains a ``CascadeModel`` and writes the serving SavedModel.

Wired into the Trainer as ``run_fn="tfcascade.components.trainer_module.run_fn"`` (an importable module,
so no user-code wheel is built per run). Everything about the model comes from the Trainer's
``custom_config`` (see :data:`DEFAULTS`); ``train_args.num_steps`` caps the steps per epoch.

Model artifact layout::

    <model uri>/Format-Serving/   serving SavedModel (tfcascade.serving.export.write_saved_model): the
                                  whole cascade on raw ids as ``serving_default``,
                                  ``recommend`` over the training examples' items, one
                                  signature per stage, warm-up requests for every signature
    <model uri>/Format-Cascade/   the trained Keras cascade (tfcascade.training.load_model),
                                  what the JointRecallValidator evaluates
    <model_run uri>/              TensorBoard logs of the run (training.train writes them
                                  under its model_dir; they are copied here)
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging

CASCADE_MODEL_DIR = "Format-Cascade"

# custom_config keys and their defaults (the arguments of tfcascade.training.train).
DEFAULTS: dict[str, Any] = {
    "loss": "lcron",
    "stages": 2,
    "epochs": 1,
    "batch_size": 1024,
    "lr": 1e-2,
    "temperature": None,
    "seed": 0,
    "loss_options": None,
    "sampled_negatives": 0,
    "k": 10,
    "qs": None,
}


def cascade_model_dir(model_uri: str) -> str:
    """Where the Keras cascade of a Trainer ``Model`` artifact lives."""
    return os.path.join(model_uri, CASCADE_MODEL_DIR)


def _split_root(patterns: list[str], split: str) -> str:
    """The Examples artifact folder, from file patterns like ``<uri>/Split-train/*``."""
    for pattern in patterns:
        head = pattern
        while head and head != os.path.dirname(head):
            if os.path.basename(head) == f"Split-{split}":
                return os.path.dirname(head)
            head = os.path.dirname(head)
    raise ValueError(f"no Split-{split} folder in the Trainer's file patterns {patterns!r}")


def _expand(patterns: list[str]) -> list[str]:
    import tensorflow as tf

    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p) if not tf.io.gfile.isdir(f)})
    if not files:
        raise ValueError(f"no example files match {patterns!r}")
    return files


def resolve_config(custom_config: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULTS`` updated with ``custom_config``; unknown keys are an error.

    Raises:
      ValueError: a key of ``custom_config`` is not one of ``DEFAULTS`` (or ``code_fingerprint``,
        which only takes part in the pipeline's cache key).
    """
    config = dict(DEFAULTS)
    for key, value in (custom_config or {}).items():
        if key == "code_fingerprint":
            continue
        if key not in DEFAULTS:
            raise ValueError(
                f"unknown Trainer custom_config key {key!r} (value {value!r}); known keys: "
                f"{sorted(DEFAULTS)}"
            )
        config[key] = value
    return config


def run_fn(fn_args) -> None:
    """Trains the cascade, then exports the serving SavedModel (TFX generic Trainer contract).

    Args:
      fn_args: ``tfx.components.FnArgs``; uses ``train_files``, ``eval_files``,
        ``serving_model_dir``, ``model_run_dir``, ``train_steps`` and ``custom_config``.
    """
    from tfcascade import training
    from tfcascade.data import load_vocabularies
    from tfcascade.serving.export import default_warmup_requests, write_saved_model
    from tfcascade.serving.item_table import items_from_examples

    config = resolve_config(fn_args.custom_config)
    data_dir = _split_root(fn_args.train_files, "train")
    model_uri = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    model_dir = cascade_model_dir(model_uri)
    logging.info("Training the cascade on %s with %s", data_dir, json.dumps(config))
    result = training.train(
        data_dir,
        model_dir,
        loss=config["loss"],
        stages=int(config["stages"]),
        epochs=int(config["epochs"]),
        batch_size=int(config["batch_size"]),
        lr=float(config["lr"]),
        temperature=config["temperature"],
        seed=int(config["seed"]),
        loss_options=config["loss_options"],
        train_files=_expand(fn_args.train_files),
        eval_files=_expand(fn_args.eval_files),
        steps_per_epoch=fn_args.train_steps,
        sampled_negatives=int(config["sampled_negatives"]),
    )
    model = training.load_model(model_dir)
    qs = config["qs"]
    vocabularies = load_vocabularies(data_dir)
    write_saved_model(
        model,
        fn_args.serving_model_dir,
        os.path.join(data_dir, "vocab"),
        k=int(config["k"]),
        qs=tuple(qs) if qs else None,
        warmup_requests=default_warmup_requests(_expand(fn_args.eval_files), vocabularies),
        items=items_from_examples(_expand(fn_args.train_files), vocabularies),
    )
    import tensorflow as tf

    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "train_result.json"), "w") as f:
        f.write(json.dumps({"config": config, "result": result}, indent=1, default=str))
    _copy_tensorboard_logs(model_dir, fn_args.model_run_dir)
    logging.info("Serving model written to %s", fn_args.serving_model_dir)


def _copy_tensorboard_logs(model_dir: str, model_run_dir: str) -> None:
    """Copies event files written under ``model_dir`` so TFX's ModelRun artifact has them."""
    import tensorflow as tf

    for root, _, files in tf.io.gfile.walk(model_dir):
        for name in files:
            if name.startswith("events.out.tfevents."):
                target_dir = os.path.join(model_run_dir, os.path.relpath(root, model_dir))
                tf.io.gfile.makedirs(target_dir)
                tf.io.gfile.copy(os.path.join(root, name), os.path.join(target_dir, name),
                                 overwrite=True)
