"""Training loop of graph recommenders: full-batch BPR, AdamW (PyTorch's rule), validation every
few epochs, early stopping on validation NDCG@20, TensorBoard scalars — the official TopKGAT
protocol (arXiv 2601.18432, github.com/StupidThree/TopKGAT)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcascade.topkgat.evaluator import DEFAULT_KS, FullRankingEvaluator
from tfcascade.topkgat.loss import bpr_loss
from tfcascade.topkgat.model import TopKGAT
from tfcascade.topkgat.sampler import NegativeSampler

logger = logging.getLogger(__name__)


# The official README's command line per dataset (github.com/StupidThree/TopKGAT): layers,
# AdamW learning rate and λ of the layer-0 penalty; other data sets get its parse.py defaults.
OFFICIAL_SETTINGS = {
    "Ali-Display": {"layers": 4, "lr": 1e-1, "reg": 1e-4},
    "Epinions": {"layers": 4, "lr": 1e-1, "reg": 1e-4},
    "Food": {"layers": 4, "lr": 1e-2, "reg": 0.0},
    "Gowalla": {"layers": 3, "lr": 1e-1, "reg": 0.0},
}
OFFICIAL_DEFAULTS = {"layers": 4, "lr": 1e-1, "reg": 1e-4}


def official_settings(dataset: str) -> dict:
    """``{"layers", "lr", "reg"}`` of the official README for ``dataset`` (a folder name), or the
    official code's defaults for any other data set."""
    return dict(OFFICIAL_SETTINGS.get(dataset, OFFICIAL_DEFAULTS))


class AdamW:
    """AdamW with PyTorch's update rule (``torch.optim.AdamW``, Loshchilov & Hutter, arXiv 1711.05101).

    For every variable ``p`` with gradient ``g`` at step ``t`` (1-based)::

        p ← p · (1 − lr · weight_decay)
        m ← β1 m + (1 − β1) g            v ← β2 v + (1 − β2) g²
        p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + ε)

    Keras's ``AdamW`` adds ε to the *uncorrected* √v instead (its effective ε is
    ε / √(1 − β2^t): 32× larger at step 1, 3× at step 100). That matters here: the full-batch
    BPR gradients of single embedding rows are ~1e-8, the size of ε, so the Keras rule takes far
    smaller steps than the official PyTorch code for the first few hundred epochs.

    Args:
      variables: the variables to update (their gradients are given to ``apply`` in order).
      lr, weight_decay, beta_1, beta_2, epsilon: as in ``torch.optim.AdamW``.
    """

    def __init__(self, variables, lr: float, weight_decay: float = 0.0, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8):
        self.variables = list(variables)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="adamw_iterations")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="adamw_m") for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="adamw_v") for v in self.variables]

    def apply(self, gradients) -> None:
        """One update of every variable with ``gradients`` (same order as ``variables``)."""
        gradients = list(gradients)
        if len(gradients) != len(self.variables):
            raise ValueError(f"got {len(gradients)} gradients for {len(self.variables)} variables")
        t = tf.cast(self.iterations.assign_add(1), tf.float64)
        # Bias corrections in float64, as PyTorch computes them in Python floats.
        step_size = tf.cast(self.lr / (1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), t)), tf.float32)
        root_bc2 = tf.cast(tf.sqrt(1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), t)), tf.float32)
        for variable, gradient, m, v in zip(self.variables, gradients, self.m, self.v, strict=True):
            if gradient is None:
                continue
            g = tf.convert_to_tensor(gradient)
            if self.weight_decay:
                variable.assign(variable * (1.0 - self.lr * self.weight_decay))
            m_new = m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            v_new = v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
            variable.assign_sub(step_size * m_new / (tf.sqrt(v_new) / root_bc2 + self.epsilon))


def make_train_step(model: TopKGAT, optimizer: AdamW, reg: float, jit_compile: bool = False):
    """A compiled full-batch step ``step(users, items, negatives) -> (loss, user_x, item_x)``.

    ``user_x`` / ``item_x`` are the final embeddings the loss was computed from, i.e. those of
    the weights *before* this step's update (what the official code evaluates).
    """

    @tf.function(jit_compile=jit_compile)
    def step(users, items, negatives):
        with tf.GradientTape() as tape:
            user_x, item_x = model.propagate()
            loss = bpr_loss(user_x, item_x, users, items, negatives, reg,
                            model.user_embedding, model.item_embedding)
        optimizer.apply(tape.gradient(loss, optimizer.variables))
        return loss, user_x, item_x

    return step


def _summary_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar written with TF core only (works without the tensorboard package).

    Same record as ``tf.summary.scalar``: a float32 scalar tagged for the "scalars" plugin.
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                     metadata=metadata.SerializeToString())


class EarlyStopping:
    """The official stopping rule (``main.py`` of the TopKGAT code).

    The best epoch is the last one whose validation score was *strictly* higher than every
    earlier one, starting from a best score of 0 at epoch 0; training stops at the first
    epoch ``e`` with ``e − best_epoch ≥ patience`` (checked after every epoch, validated or not).
    """

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best_epoch, self.best_score = 0, 0.0

    def update(self, epoch: int, score: float) -> bool:
        """Records a validation score; True if it is a new best."""
        if score > self.best_score:
            self.best_epoch, self.best_score = int(epoch), float(score)
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return epoch - self.best_epoch >= self.patience


@dataclasses.dataclass
class TrainConfig:
    """Training and evaluation settings; the defaults are the official TopKGAT protocol.

    Attributes:
      epochs: maximum number of full-batch epochs (one optimizer step each; 2000 as in the
        official code).
      lr: AdamW learning rate (0.1; the official README uses 0.01 on Food).
      weight_decay: AdamW decoupled weight decay on all parameters, β included (1e-4).
      reg: λ of the layer-0 embedding penalty (1e-4; the official README uses 0 on Food).
      eval_every: validate every this many epochs (20), and once before training (epoch 0).
      patience: stop at the first epoch that is this many epochs after the last strictly
        better validation NDCG@20 (200; see ``EarlyStopping``).
      ks: cut-offs of the evaluation.
      seed: seeds the negative sampler (the model's initialisation is seeded by TF's global seed).
      jit_compile: compile the epoch step with XLA (about 2x faster on CPU than graph mode).
      memory_bytes: block budget of the evaluation.
    """

    epochs: int = 2000
    lr: float = 0.1
    weight_decay: float = 1e-4
    reg: float = 1e-4
    eval_every: int = 20
    patience: int = 200
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    jit_compile: bool = True
    memory_bytes: int = 2**30

    def __post_init__(self):
        for name in ("epochs", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)!r}")
        for name in ("lr",):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)!r}")
        for name in ("weight_decay", "reg", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={getattr(self, name)!r}")


@dataclasses.dataclass
class TrainResult:
    """What ``train_topkgat`` found.

    Attributes:
      best_epoch: epoch of the best validation NDCG@20 (0: the initial weights; validation at
        epoch ``e`` ranks the weights after ``e − 1`` updates, as the official code does).
      valid, test: metrics at the best epoch.
      seconds_per_epoch: mean wall time of one epoch (negative sampling + the training step),
        the first (tracing) epoch excluded; validation time is not included.
      epochs_run: epochs actually trained.
      history: ``[(epoch, loss, valid metrics)]`` at every validation (loss None at epoch 0).
    """

    best_epoch: int
    valid: dict
    test: dict
    seconds_per_epoch: float
    epochs_run: int
    history: list


def train_topkgat(model: TopKGAT, data, config: TrainConfig | None = None,
                  log_dir: str | Path | None = None) -> TrainResult:
    """Trains ``model`` on ``data.train`` with early stopping on ``data.valid``.

    The official TopKGAT loop (its ``main.py`` / ``model.py``): every epoch is one AdamW step
    (PyTorch's rule, ``AdamW``) on the BPR loss over all training rows, with one fresh uniform
    negative per row. The validation split is ranked before training (epoch 0) and every
    ``eval_every`` epochs; as in the official code, validation at epoch ``e`` ranks the
    embeddings that epoch's loss was computed from, i.e. the weights after ``e − 1`` updates.
    The weights with the strictly best NDCG@20 (or the largest K in ``ks``) are kept and
    restored, training stops by ``EarlyStopping``, and the test split is ranked with the best
    weights. Progress goes to ``logging`` and, with ``log_dir``, to TensorBoard (``loss``
    every epoch, ``valid/<metric>`` at every validation).

    Args:
      model: a ``TopKGAT`` whose graph is ``data.train``.
      data: an ``Interactions`` (``tfcascade.data.interactions``).
      config: ``TrainConfig``; None uses the defaults.
      log_dir: optional TensorBoard folder.

    Returns:
      A ``TrainResult``.
    """
    config = config or TrainConfig()
    if (data.num_users, data.num_items, len(data.train)) != (model.num_users, model.num_items, model.num_edges):
        raise ValueError(
            f"model sizes (users={model.num_users}, items={model.num_items}, edges={model.num_edges}) "
            f"do not match the data (users={data.num_users}, items={data.num_items}, "
            f"train rows={len(data.train)})")
    key = f"ndcg@{20 if 20 in config.ks else max(config.ks)}"
    sampler = NegativeSampler(data.train, data.num_items, seed=config.seed)
    valid_eval = FullRankingEvaluator(data.valid, data.train, data.num_users, data.num_items,
                                      config.ks, config.memory_bytes)
    variables = model.trainable_variables
    optimizer = AdamW(variables, lr=config.lr, weight_decay=config.weight_decay, epsilon=1e-8)
    step = make_train_step(model, optimizer, config.reg, config.jit_compile)
    users = tf.constant(data.train[:, 0], tf.int32)
    items = tf.constant(data.train[:, 1], tf.int32)
    writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None
    stopper = EarlyStopping(config.patience)
    best = {"weights": [v.numpy() for v in variables], "valid": {}}
    step_times, history = [], []

    def validate(epoch, loss, user_x, item_x, weights):
        metrics = valid_eval.evaluate(user_x, item_x)
        history.append((epoch, loss, metrics))
        improved = stopper.update(epoch, metrics[key])
        if improved:
            best.update(weights=weights, valid=metrics)
        logger.info("epoch %d loss %s valid %s %.5f recall@%d %.5f%s (%.3f s/epoch)", epoch,
                    "-" if loss is None else f"{loss:.5f}", key, metrics[key], max(config.ks),
                    metrics[f"recall@{max(config.ks)}"], " *" if improved else "",
                    float(np.mean(step_times[1:] or step_times or [0.0])))
        if writer:
            with writer.as_default():
                for name, value in metrics.items():
                    _summary_scalar(f"valid/{name}", value, step=epoch)
            writer.flush()

    validate(0, None, *model.propagate(), best["weights"])
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        validating = epoch % config.eval_every == 0 or epoch == config.epochs
        weights = [v.numpy() for v in variables] if validating else None  # before this update
        t0 = time.perf_counter()
        negatives = sampler.sample()
        loss, user_x, item_x = step(users, items, tf.constant(negatives))
        loss = float(loss)
        step_times.append(time.perf_counter() - t0)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at epoch {epoch}; lower lr={config.lr}")
        if writer:
            with writer.as_default():
                _summary_scalar("loss", loss, step=epoch)
        if validating:
            validate(epoch, loss, user_x, item_x, weights)
        if stopper.should_stop(epoch):
            logger.info("early stop at epoch %d: no improvement since epoch %d", epoch, stopper.best_epoch)
            break
    for variable, value in zip(variables, best["weights"], strict=True):
        variable.assign(value)
    test_eval = FullRankingEvaluator(data.test, data.train, data.num_users, data.num_items,
                                     config.ks, config.memory_bytes)
    test = test_eval.evaluate(*model.propagate())
    if writer:
        with writer.as_default():
            for name, value in test.items():
                _summary_scalar(f"test/{name}", value, step=stopper.best_epoch)
        writer.close()
    seconds = float(np.mean(step_times[1:] or step_times or [0.0]))
    return TrainResult(stopper.best_epoch, best["valid"], test, seconds, epoch, history)
