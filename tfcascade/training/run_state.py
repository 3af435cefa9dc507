"""What a training run is, so that an interrupted run is resumed only by the same run.

``model_dir/run.json`` records the run's identity — every option that shapes its model or its
optimisation, and the data fingerprint — and its progress (optimizer steps and seconds, summed
over every resume). A rerun in the same ``model_dir`` with other options would otherwise
restore the killed run's backup into a differently configured model (a hybrid model, or a
shape error); it is refused instead, naming what differs, unless ``restart=True`` starts over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfcascade._keras import keras
from tfcascade.models.spec import CascadeSpec
from tfcascade.training.config import TrainConfig

RUN_FILE = "run.json"
BACKUP_DIR = "backup"
# Options that change neither the trained model nor its optimisation.
NOT_IDENTITY = ("eval_batch_size", "backup_every")


class RunMismatchError(ValueError):
    """A rerun whose options or data differ from the interrupted run in the same model_dir."""


def run_identity(config: TrainConfig, spec: CascadeSpec, data_fingerprint: str | None) -> dict[str, Any]:
    """What a run is: every training option but ``NOT_IDENTITY``, the spec and the data."""
    options = {key: value for key, value in config.to_dict().items() if key not in NOT_IDENTITY}
    return {**options, **spec.get_config(), "data_fingerprint": data_fingerprint}


def read_run(model_dir: str) -> dict | None:
    """``model_dir/run.json`` (None when there is none)."""
    path = os.path.join(model_dir, RUN_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def write_run(model_dir: str, identity: Mapping[str, Any], status: str, steps: int, seconds: float) -> None:
    """Writes ``run.json`` atomically (a temporary file renamed into place)."""
    path = os.path.join(model_dir, RUN_FILE)
    payload = {"identity": dict(identity), "status": status, "steps": int(steps), "seconds": round(float(seconds), 3)}
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(path + ".tmp", "w") as fh:
        fh.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def prepare_run(model_dir: str, identity: Mapping[str, Any], restart: bool = False) -> tuple[int, float]:
    """Checks that ``model_dir`` may run ``identity``; returns the steps and seconds already trained.

    Args:
      model_dir: the run's folder.
      identity: the options and data fingerprint of the run about to start (JSON values).
      restart: drop an interrupted run's backup and state, and start over.

    Returns:
      ``(steps, seconds)`` the interrupted run trained up to its backup (0, 0 for a fresh start).

    Raises:
      RunMismatchError: an interrupted run's backup is there and its identity differs from
        ``identity`` (or is unknown), and ``restart`` is False.
    """
    backup = os.path.join(model_dir, BACKUP_DIR)
    state = read_run(model_dir)
    if restart:
        if tf.io.gfile.exists(backup):
            tf.io.gfile.rmtree(backup)
        return 0, 0.0
    if not tf.io.gfile.exists(backup):
        return 0, 0.0
    recorded = json.loads(json.dumps((state or {}).get("identity"), default=str))
    wanted = json.loads(json.dumps(dict(identity), default=str))
    if recorded == wanted:
        return int(state.get("steps", 0)), float(state.get("seconds", 0.0))
    if recorded is None:
        raise RunMismatchError(f"model_dir={model_dir!r} holds the backup of an interrupted run whose options are "
                               "unknown (no run.json): rerun with --restart (restart=True) to start over, or use "
                               "another --model-dir")
    differ = sorted(set(recorded) | set(wanted))
    differ = [f"{key}: {recorded.get(key)!r} -> {wanted.get(key)!r}" for key in differ
              if recorded.get(key) != wanted.get(key)]
    raise RunMismatchError(f"model_dir={model_dir!r} holds the backup of an interrupted run with other options "
                           f"({'; '.join(differ)}): rerun with the same options to resume it, with --restart "
                           "(restart=True) to start over, or use another --model-dir")


class RunProgress(keras.callbacks.Callback):
    """Records the run's progress in ``run.json`` whenever the backup is written.

    Args:
      model_dir, identity: as in :func:`prepare_run`.
      prior_steps, prior_seconds: what the run trained before this part (resumes add up).
      save_freq: the backup's ``save_freq`` (``"epoch"`` or every that many batches).
    """

    def __init__(self, model_dir: str, identity: Mapping[str, Any], prior_steps: int = 0,
                 prior_seconds: float = 0.0, save_freq: int | str = "epoch"):
        super().__init__()
        self.model_dir, self.identity, self.save_freq = model_dir, dict(identity), save_freq
        self.prior_steps, self.prior_seconds = int(prior_steps), float(prior_seconds)
        self.steps_this_run = 0
        self.last_epoch_logs: dict[str, float] = {}
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        self.steps_this_run += 1
        if self.save_freq != "epoch" and self.steps_this_run % int(self.save_freq) == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch_logs = {name: float(value) for name, value in (logs or {}).items()}
        if self.save_freq == "epoch":
            self._write()

    def _write(self) -> None:
        write_run(self.model_dir, self.identity, "running", self.steps, self.seconds)

    @property
    def steps(self) -> int:
        """Optimizer steps of the whole run, resumes included."""
        return self.prior_steps + self.steps_this_run

    @property
    def seconds(self) -> float:
        """Training seconds of the whole run, resumes included."""
        return self.prior_seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)
