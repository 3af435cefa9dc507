"""CascadeModel: the stages of a cascade trained as one network (TFRS model).

Stages run in order retrieval → (pre-ranking →) ranking; training scores every stage on the
whole logged list and optimises a cascade loss (``tfcascade.losses``) so that the *joint*
recall of the hard cascade goes up. At inference ``select`` runs the real cascade: each stage
keeps its top-q of what the previous stage kept (``ops.cascade_select``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfcascade._keras import keras
from tfcascade.losses import registry
from tfcascade.losses.base import DEFAULT_QS
from tfcascade.metrics import NDCG, JointRecall, StageRecall
from tfcascade.models.din import DIN
from tfcascade.models.dssm import DSSM
from tfcascade.models.mlp import MLPPreranker
from tfcascade.models.tarq import TARQ
from tfcascade.ops.cascade_select import cascade_select

STAGE_CLASSES = {"dssm": DSSM, "mlp": MLPPreranker, "din": DIN, "tarq": TARQ}
DEFAULT_STAGES = {2: ("dssm", "din"), 3: ("dssm", "mlp", "din")}
STAGE_NAMES = {2: ("retrieval", "ranking"), 3: ("retrieval", "prerank", "ranking")}


class CascadeModel(tfrs.models.Model):
    """A two- or three-stage cascade.

    Args:
      stages: the stage models, earliest first (each ``call(features) -> [B, n]``).
      loss: a loss name (``tfcascade.losses.names()``) or a ``CascadeLoss``.
      loss_options: options of the named loss (e.g. ``{"temperature": 50}``).
      qs: how many items each stage keeps at inference (default (30, 20) / (40, 30, 20)).
      k: the ground-truth size K and the number of items ``select`` returns.
    """

    def __init__(self, stages: Sequence[keras.Model], loss="lcron", loss_options: Mapping | None = None,
                 qs: Sequence[int] | None = None, k: int = 10, **kwargs):
        super().__init__(**kwargs)
        n = len(stages)
        if n not in (2, 3):
            raise ValueError(f"a cascade has 2 or 3 stages, got {n}")
        self.stage_models = list(stages)
        self.qs = tuple(int(q) for q in (qs or DEFAULT_QS[n]))
        if len(self.qs) != n:
            raise ValueError(f"qs needs one value per stage ({n}), got qs={self.qs}")
        self.k = int(k)
        self.stage_names = STAGE_NAMES[n]
        self.loss_name = loss if isinstance(loss, str) else type(loss).__name__
        self.loss_options = dict(loss_options or {})
        self.cascade_loss = (registry.get(loss, stages=n, k=self.k, stage_qs=self.qs, **self.loss_options)
                             if isinstance(loss, str) else loss)
        if self.cascade_loss.stages != n:
            raise ValueError(f"loss is for {self.cascade_loss.stages} stages but the cascade has {n}")
        self.joint_recall = JointRecall(self.k, self.qs, name="joint_recall")
        self.stage_metrics = []
        for name, q in zip(self.stage_names, self.qs):
            for metric in (StageRecall(self.k, q, name=f"{name}_recall"), NDCG(self.k, name=f"{name}_ndcg")):
                setattr(self, f"{metric.name}_metric", metric)  # attributes are what Keras tracks
                self.stage_metrics.append(metric)

    def stage_scores(self, features: Mapping[str, tf.Tensor], training: bool = False) -> list[tf.Tensor]:
        """Each stage's scores ``[B, n]`` on the whole list, earliest stage first."""
        return [stage(features, training=training) for stage in self.stage_models]

    def call(self, features, training=False):
        return tf.stack(self.stage_scores(features, training), axis=1)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features = dict(inputs)
        if "label" not in features:
            raise ValueError("features must contain 'label' ([B, n], -1 = padding) to compute the loss")
        labels = features.pop("label")
        mask = features.get("mask")
        scores = self.stage_scores(features, training=training)
        loss = self.cascade_loss(labels, scores, mask)
        stacked = tf.stack(scores, axis=1)
        masked_labels = labels if mask is None else tf.where(mask > 0, labels, -tf.ones_like(labels))
        self.joint_recall.update_state(masked_labels, stacked)
        for i, s in enumerate(scores):
            self.stage_metrics[2 * i].update_state(masked_labels, s)
            self.stage_metrics[2 * i + 1].update_state(masked_labels, s)
        return loss

    def select(self, features, qs: Sequence[int] | None = None, k: int | None = None):
        """Runs the hard cascade: returns (indices ``[B, k]``, last-stage scores ``[B, k]``).

        Indices point into the candidate list (−1 where a row had fewer than k survivors),
        best first. ``qs`` defaults to the model's; ``k`` to K.
        """
        qs = tuple(qs or self.qs)
        k = int(k or self.k)
        if k > qs[-1]:
            raise ValueError(f"k={k} exceeds the last stage's q={qs[-1]}")
        mask = features.get("mask")
        _, idx, values = cascade_select(self.stage_scores(features), qs, mask)
        return idx[:, :k], values[:, :k]

    def config(self) -> dict:
        """What ``build_cascade`` needs to rebuild this model."""
        return dict(self._build_config)

    def save_config(self, path: str) -> None:
        with tf.io.gfile.GFile(path, "w") as fh:
            fh.write(json.dumps(self.config(), indent=2, sort_keys=True) + "\n")


def build_cascade(metadata_or_vocab_sizes: Mapping, stages: int = 2, loss="lcron", embedding_dim: int = 8,
                  loss_options: Mapping | None = None, qs: Sequence[int] | None = None, k: int = 10,
                  stage_models: Sequence[str] | None = None, seed: int | None = None,
                  data_fingerprint: str | None = None) -> CascadeModel:
    """Builds a cascade from preprocessing metadata (or a vocab-size dict).

    Args:
      metadata_or_vocab_sizes: ``load_metadata(out_dir)`` or ``{feature: size}``; metadata's
        ``fingerprint`` becomes the model's ``data_fingerprint``
        (``tfcascade.data.fingerprint``).
      stages: 2 (DSSM → DIN) or 3 (DSSM → MLP → DIN).
      loss, loss_options, qs, k: see :class:`CascadeModel`.
      stage_models: stage kinds (``dssm``, ``mlp``, ``din``, ``tarq``), default by ``stages``;
        e.g. ``("dssm", "tarq", "din")`` puts TARQ in the pre-ranking slot.
      seed: seeds the weight initialisation.
      data_fingerprint: the fingerprint of the preprocessing the model is for (default: the
        metadata's); kept in ``config()`` so that other data is refused.
    """
    if stages not in (2, 3):
        raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
    vocab = dict(metadata_or_vocab_sizes.get("vocab_sizes", metadata_or_vocab_sizes))
    kinds = tuple(stage_models or DEFAULT_STAGES[stages])
    if len(kinds) != stages or any(kind not in STAGE_CLASSES for kind in kinds):
        raise ValueError(f"stage_models must be {stages} of {sorted(STAGE_CLASSES)}, got {kinds}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    models = [STAGE_CLASSES[kind](vocab, embedding_dim, name=f"{name}_{kind}")
              for kind, name in zip(kinds, STAGE_NAMES[stages])]
    model = CascadeModel(models, loss=loss, loss_options=loss_options, qs=qs, k=k)
    model._build_config = {"vocab_sizes": vocab, "stages": stages, "loss": loss, "embedding_dim": embedding_dim,
                           "loss_options": dict(loss_options or {}), "qs": list(model.qs), "k": model.k,
                           "stage_models": list(kinds),
                           "data_fingerprint": data_fingerprint or metadata_or_vocab_sizes.get("fingerprint")}
    return model
