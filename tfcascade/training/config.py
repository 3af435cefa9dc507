"""TrainConfig: how a cascade is trained — the loss, the optimisation and the training data's
sampling — as one validated value, shared by ``train``, ``compare``, the CLI, the TFX
Trainer's ``run_fn`` and the pipeline.

What is trained (the stages and their cuts) is the model's :class:`~tfcascade.models.CascadeSpec`;
where (data, folders, strategy) are arguments of ``train``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from tfcascade.data.negatives import DRAWS
from tfcascade.layers.initialization import INITIALIZATIONS
from tfcascade.losses import registry
from tfcascade.models.spec import CascadeSpec

# What a run recorded before an option existed was trained with, where that is not the option's
# default today: before ``adam_epsilon``, Adam ran with Keras' ε.
RECORDED_BEFORE_OPTION = {"adam_epsilon": 1e-7}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The options of a training run (Adam; LCRON's setup, arXiv 2503.09492, by default).

    Args:
      loss: a ``tfcascade.losses`` name.
      loss_options: the loss' options, e.g. ``{"temperature": 50}`` (the operator temperature
        of the losses that have one).
      epochs: passes over the train split.
      batch_size: requests per step (the global batch under a multi-worker strategy).
      lr: Adam's learning rate.
      adam_epsilon: Adam's ε. Default 1e-8, PyTorch's, which the LCRON / DFTopK reference code
        trains with (Keras' default is 1e-7). Keras adds ε to √v before the bias correction,
        PyTorch after it, so Keras' ε acts as ε / √(1 − β₂ᵗ) of PyTorch's: ×31 at step 1, ×2.2
        at step 217, ×1.3 at step 1000. On a cascade whose embeddings see a row every few dozen
        steps, ε 1e-7 rather than 1e-8 cost every stage about 0.01 recall (``docs/cascade.md``).
      seed: seeds the weights, the shuffling, the sampled negatives and the codebook resets.
      embedding_dim: width of every stage's feature embeddings.
      initialization: how the stage models' weights start: ``"reference"`` (PyTorch's defaults,
        as the LCRON / DFTopK reference code) or ``"keras"`` (``tfcascade.layers.initialization``).
      steps_per_epoch: caps each epoch (None: the whole split).
      eval_batch_size: requests per evaluation step.
      sampled_negatives: m > 0 appends m negatives sampled from the batch's other items to
        every training list (``tfcascade.data.negatives``).
      negative_draw: ``items`` (distinct items of the batch) or ``slots`` (other requests'
        slots, as the DFTopK reference code).
      backup_every: ``"epoch"`` or a number of steps between the resumable backups.
      codebook_reset_every: batches between dead-code resets of quantizing stages (TARQ).

    Raises:
      ValueError: an option that cannot give a meaningful run, naming it and its value.
    """

    loss: str = "lcron"
    loss_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 1024
    lr: float = 1e-2
    adam_epsilon: float = 1e-8
    seed: int = 0
    embedding_dim: int = 8
    initialization: str = "reference"
    steps_per_epoch: int | None = None
    eval_batch_size: int = 256
    sampled_negatives: int = 0
    negative_draw: str = "items"
    backup_every: int | str = "epoch"
    codebook_reset_every: int = 50

    def __post_init__(self):
        object.__setattr__(self, "loss_options", dict(self.loss_options or {}))
        self.validate()

    def validate(self) -> None:
        """Refuses options that cannot give a meaningful run, before any work is done (called on
        construction).

        Raises:
          ValueError: naming the option and its value (lr must be finite and > 0; epochs,
            batch_size, embedding_dim, eval_batch_size, codebook_reset_every and
            steps_per_epoch (when given) integers > 0; sampled_negatives an integer ≥ 0;
            seed an integer; an unknown loss, negative_draw or initialization; backup_every neither
            ``"epoch"`` nor an integer > 0).
        """
        if not isinstance(self.loss, str):
            _refuse("loss", self.loss, "a loss name")
        registry.loss_class(self.loss)  # raises, listing the names
        for name in ("lr", "adam_epsilon"):
            if not _is_positive_number(getattr(self, name)):
                _refuse(name, getattr(self, name), "a finite number > 0")
        for name in ("epochs", "batch_size", "embedding_dim", "eval_batch_size", "steps_per_epoch",
                     "codebook_reset_every"):
            value = getattr(self, name)
            if not (value is None and name == "steps_per_epoch") and not (_is_int(value) and value > 0):
                raise ValueError(f"{name} must be an integer > 0, got {name}={value!r}")
        if not (_is_int(self.sampled_negatives) and self.sampled_negatives >= 0):
            _refuse("sampled_negatives", self.sampled_negatives, "an integer >= 0")
        if not _is_int(self.seed):
            _refuse("seed", self.seed, "an integer")
        if self.negative_draw not in DRAWS:
            _refuse("negative_draw", self.negative_draw, f"one of {DRAWS}")
        if self.initialization not in INITIALIZATIONS:
            _refuse("initialization", self.initialization, f"one of {INITIALIZATIONS}")
        if self.backup_every != "epoch" and not (_is_int(self.backup_every) and self.backup_every > 0):
            _refuse("backup_every", self.backup_every, "'epoch' or an integer > 0")

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-friendly dict; :meth:`from_dict` inverts it."""
        return {**dataclasses.asdict(self), "loss_options": dict(self.loss_options)}

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> TrainConfig:
        """The config of a dict of options; those left out keep their defaults.

        A ``temperature`` key (the ``--temperature`` of the commands) is put into
        ``loss_options`` when it is not None.

        Raises:
          ValueError: an unknown key (naming it and its value) or a bad option.
        """
        options = dict(options)
        temperature = options.pop("temperature", None)
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"unknown training option {unknown[0]!r} (value {options[unknown[0]]!r}); "
                             f"known options: {fields + ['temperature']}")
        if temperature is not None:
            options["loss_options"] = {**(options.get("loss_options") or {}), "temperature": float(temperature)}
        return cls(**options)


def resolve(config: TrainConfig | None = None, spec: CascadeSpec | None = None,
            **options) -> tuple[TrainConfig, CascadeSpec]:
    """The two objects of a run from the keyword form of ``train`` and ``compare``.

    ``train(data, model_dir, loss="bce", stages=3, stage_models=(...), epochs=2)`` is
    ``train(data, model_dir, TrainConfig(loss="bce", epochs=2), CascadeSpec.default(3,
    stage_kinds=(...)))``: keyword options override the fields of ``config`` (default
    ``TrainConfig()``), and ``stages`` / ``stage_models`` describe the spec when none is given.

    Raises:
      ValueError: an unknown option, a bad value, or ``stages`` / ``stage_models`` with a spec.
    """
    stages, kinds = options.pop("stages", None), options.pop("stage_models", None)
    if spec is None:
        spec = CascadeSpec.default(2 if stages is None else stages,
                                   stage_kinds=tuple(kinds) if kinds is not None else None)
    elif stages is not None or kinds is not None:
        raise ValueError(f"give the cascade's shape as spec or as stages / stage_models, not both "
                         f"(spec={spec}, stages={stages!r}, stage_models={kinds!r})")
    if options:
        config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **options})
    return config or TrainConfig(), spec


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_number(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _refuse(name: str, value, what: str):
    raise ValueError(f"{name} must be {what}, got {name}={value!r}")
