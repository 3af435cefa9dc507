"""The TFX Trainer's ``run_fn``: trains a ``CascadeModel`` and writes the serving SavedModel.

Wired into the Trainer as ``run_fn="tfcascade.components.trainer_module.run_fn"`` (an importable module,
so no user-code wheel is built per run). Everything about the model comes from the Trainer's
``custom_config``: ``{"train": TrainConfig.to_dict(), "spec": CascadeSpec.get_config()}``
(:func:`custom_config`; either may be left out for the defaults); ``train_args.num_steps`` caps
the steps per epoch when the TrainConfig does not.

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
from typing import TYPE_CHECKING, Any

from absl import logging

if TYPE_CHECKING:
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig

CASCADE_MODEL_DIR = "Format-Cascade"
# custom_config keys: the TrainConfig, the CascadeSpec; code_fingerprint only takes part in the
# pipeline's cache key.
TRAIN_KEY, SPEC_KEY, CODE_FINGERPRINT_KEY = "train", "spec", "code_fingerprint"


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


def custom_config(config: TrainConfig, spec: CascadeSpec, code_fingerprint: str | None = None) -> dict[str, Any]:
    """The Trainer's ``custom_config`` that makes :func:`run_fn` train ``spec`` with ``config``."""
    out: dict[str, Any] = {TRAIN_KEY: config.to_dict(), SPEC_KEY: spec.get_config()}
    if code_fingerprint is not None:
        out[CODE_FINGERPRINT_KEY] = code_fingerprint
    return out


def resolve_config(custom_config: dict[str, Any] | None) -> tuple[TrainConfig, CascadeSpec]:
    """The TrainConfig and CascadeSpec of a Trainer's ``custom_config`` (:func:`custom_config`).

    Raises:
      ValueError: a key of ``custom_config`` is not ``train``, ``spec`` or ``code_fingerprint``,
        or one of the two is invalid (naming the key and value).
    """
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig

    known = (TRAIN_KEY, SPEC_KEY, CODE_FINGERPRINT_KEY)
    for key, value in (custom_config or {}).items():
        if key not in known:
            raise ValueError(f"unknown Trainer custom_config key {key!r} (value {value!r}); known keys: {list(known)}")
    config = TrainConfig.from_dict((custom_config or {}).get(TRAIN_KEY) or {})
    spec = (custom_config or {}).get(SPEC_KEY)
    return config, CascadeSpec.from_config(spec) if spec else CascadeSpec.default()


def run_fn(fn_args) -> None:
    """Trains the cascade, then exports the serving SavedModel (TFX generic Trainer contract).

    Args:
      fn_args: ``tfx.components.FnArgs``; uses ``train_files``, ``eval_files``,
        ``serving_model_dir``, ``model_run_dir``, ``train_steps`` and ``custom_config``.
    """
    import dataclasses

    from tfcascade import training
    from tfcascade.data import load_vocabularies
    from tfcascade.serving.export import default_warmup_requests, write_saved_model
    from tfcascade.serving.item_table import items_from_examples

    config, spec = resolve_config(fn_args.custom_config)
    if config.steps_per_epoch is None and fn_args.train_steps:
        config = dataclasses.replace(config, steps_per_epoch=int(fn_args.train_steps))
    data_dir = _split_root(fn_args.train_files, "train")
    model_uri = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    model_dir = cascade_model_dir(model_uri)
    logging.info("Training the cascade %s on %s with %s", spec, data_dir, config)
    result = training.train(data_dir, model_dir, config, spec, train_files=_expand(fn_args.train_files),
                            eval_files=_expand(fn_args.eval_files))
    model = training.load_model(model_dir)
    vocabularies = load_vocabularies(data_dir)
    write_saved_model(
        model,
        fn_args.serving_model_dir,
        os.path.join(data_dir, "vocab"),
        warmup_requests=default_warmup_requests(_expand(fn_args.eval_files), vocabularies),
        items=items_from_examples(_expand(fn_args.train_files), vocabularies),
    )
    import tensorflow as tf

    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "train_result.json"), "w") as f:
        f.write(json.dumps({"config": config.to_dict(), "spec": spec.get_config(), "result": result},
                           indent=1, default=str))
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
