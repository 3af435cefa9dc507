"""CascadeModel: the stages of a cascade trained as one network (TFRS model).

Stages run in order retrieval → (pre-ranking →) ranking; training scores every stage on the
whole logged list and optimises a cascade loss (``tfcascade.losses``) so that the *joint*
recall of the hard cascade goes up. At inference ``select`` runs the real cascade: each stage
keeps its top-q of what the previous stage kept, and each later stage scores only those
survivors (``ops.cascade_select.survivor_cascade``). ``recommend`` starts from the whole item
corpus instead of a candidate list: the two-tower retrieval stage scores every corpus item
(``ops.brute_force_topk``), then the later stages score its survivors.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.losses import registry
from tfcascade.metrics import NDCG, JointRecall, StageRecall
from tfcascade.models.spec import DEFAULT_STAGE_KINDS, STAGE_CLASSES, CascadeSpec
from tfcascade.models.stage import StageModel
from tfcascade.ops.brute_force_topk import CHUNK_SIZE, brute_force_top_k
from tfcascade.ops.cascade_select import survivor_cascade

# The keys of get_config(); a config.json written before CascadeSpec had these instead of "spec".
CONFIG_KEYS = ("vocab_sizes", "embedding_dim", "initialization", "spec", "loss", "loss_options", "data_fingerprint")
LEGACY_SPEC_KEYS = ("stages", "stage_models", "qs", "k")


class CascadeModel(tfrs.models.Model):
    """A two- or three-stage cascade.

    Args:
      stages: the stage models, earliest first (each ``call(features) -> [B, n]``).
      spec: the cascade's stage kinds, names, cuts qs and k (:class:`CascadeSpec`); default
        ``CascadeSpec.default(len(stages))`` with the kind of each ``StageModel`` given. A
        ``StageModel`` whose kind differs from the spec's is refused.
      loss: a loss name (``tfcascade.losses.names()``) or a ``CascadeLoss``.
      loss_options: options of the named loss (e.g. ``{"temperature": 50}``).
      data_fingerprint: the fingerprint of the preprocessing the model is for
        (``tfcascade.data.fingerprint``); kept in the config so that other data is refused.
    """

    def __init__(self, stages: Sequence[keras.Model], spec: CascadeSpec | None = None, loss="lcron",
                 loss_options: Mapping | None = None, data_fingerprint: str | None = None, **kwargs):
        super().__init__(**kwargs)
        n = len(stages)
        if n not in (2, 3):
            raise ValueError(f"a cascade has 2 or 3 stages, got {n}")
        if spec is None:
            spec = CascadeSpec.default(n, stage_kinds=[getattr(stage, "kind", default) for stage, default
                                                       in zip(stages, DEFAULT_STAGE_KINDS[n])])
        if spec.num_stages != n:
            raise ValueError(f"spec has {spec.num_stages} stages but {n} stage models were given")
        for i, (stage, kind) in enumerate(zip(stages, spec.stage_kinds)):
            if getattr(stage, "kind", kind) != kind:
                raise ValueError(f"spec.stage_kinds[{i}]={kind!r} but stage {i} is a {type(stage).__name__} "
                                 f"(kind {stage.kind!r})")
        self.spec = spec
        self.stage_models = list(stages)
        self.data_fingerprint = data_fingerprint
        self.loss_name = loss if isinstance(loss, str) else None
        self.loss_options = dict(loss_options or {})
        self.cascade_loss = (registry.get(loss, stages=n, k=spec.k, stage_qs=spec.qs, **self.loss_options)
                             if isinstance(loss, str) else loss)
        if self.cascade_loss.stages != n:
            raise ValueError(f"loss is for {self.cascade_loss.stages} stages but the cascade has {n}")
        self.joint_recall = JointRecall(spec.k, spec.qs, name="joint_recall")
        self.stage_metrics = []
        for name, q in zip(spec.stage_names, spec.qs):
            for metric in (StageRecall(spec.k, q, name=f"{name}_recall"), NDCG(spec.k, name=f"{name}_ndcg")):
                setattr(self, f"{metric.name}_metric", metric)  # attributes are what Keras tracks
                self.stage_metrics.append(metric)

    @property
    def qs(self) -> tuple[int, ...]:
        """How many items each stage keeps (``spec.qs``)."""
        return self.spec.qs

    @property
    def k(self) -> int:
        """The ground-truth size K and the number of items ``select`` returns (``spec.k``)."""
        return self.spec.k

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The stages' names (``spec.stage_names``)."""
        return self.spec.stage_names

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

    def select(self, features: Mapping[str, tf.Tensor], qs: Sequence[int] | None = None,
               k: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the hard cascade on a candidate list, later stages on the survivors only.

        Stage 1 scores all n candidates and keeps its top-q_1; stage t scores only the q_{t−1}
        items stage t−1 kept (their item features gathered), so the ranker runs on q items, not
        n. The result equals ``ops.cascade_select`` on every stage's scores of the whole list,
        ties included.

        Args:
          features: the feature dict (``tfcascade.features``) of ``[B, n]`` candidates, any n
            (0 included); ``mask`` (optional) marks the real ones.
          qs: how many items each stage keeps (default the model's).
          k: items returned (default K), 0 < k ≤ q_T.

        Returns:
          (``indices [B, k]`` positions in the candidate list, best first, −1 where a row had
          fewer than k survivors; ``scores [B, k]`` last-stage scores, −inf where missing).
        """
        qs, k = self.validate_cut(qs, k)
        mask = features.get("mask")
        first = self.stage_models[0](features, training=False)
        valid = tf.ones_like(first, tf.bool) if mask is None else tf.cast(mask, tf.bool)
        first = tf.where(valid, first, tf.constant(-float("inf"), first.dtype))
        values, positions = tf.math.top_k(first, k=tf.minimum(qs[0], tf.shape(first)[-1]))
        n = tf.shape(first, out_type=tf.int64)[-1]
        padded = {f: tf.pad(tf.cast(features[f], tf.int64), [[0, 0], [0, 1]]) for f in F.ITEM_FEATURES}
        context = {f: features[f] for f in F.USER_FEATURES + F.HISTORY_FEATURES}

        def gather(at):
            at = tf.where(at >= 0, at, n)  # the padding column
            items = {f: tf.gather(v, at, batch_dims=1) for f, v in padded.items()}
            return {**context, **items, "mask": tf.cast(at < n, tf.float32)}

        return survivor_cascade(self._later_stages(), gather, values, positions, qs[1:], k)

    def recommend(self, features: Mapping[str, tf.Tensor], corpus: Mapping[str, tf.Tensor],
                  corpus_vectors: tf.Tensor | None = None, qs: Sequence[int] | None = None,
                  k: int | None = None, corpus_keys: tf.Tensor | None = None,
                  exclude: tf.Tensor | None = None, chunk_size: int = CHUNK_SIZE) -> tuple[tf.Tensor, tf.Tensor]:
        """The cascade from a user to a ranked top-k over a whole item corpus.

        The retrieval stage (a two-tower model: ``user_vector`` / ``item_vectors``) scores every
        corpus item, ⟨u, v_j⟩ for j = 1 … M, in chunks (``ops.brute_force_topk``) and keeps its
        top-q_1; the later stages score those survivors as in :meth:`select`.

        Args:
          features: user features ``[B]`` and history ``[B, H]`` (vocabulary indices).
          corpus: item features ``[M]`` per ``features.ITEM_FEATURES`` (vocabulary indices), M ≥ 1.
          corpus_vectors: ``[M, d]`` the retrieval stage's item vectors of the corpus (default:
            computed now, :meth:`corpus_vectors`); precompute them once per corpus.
          qs, k: as in :meth:`select`.
          corpus_keys: ``[M]`` int64 ids naming the corpus items for ``exclude`` (default the
            corpus' ``video_id``).
          exclude: ``[B, E]`` keys never to return (e.g. already shown), −1 = padding.
          chunk_size: corpus items scored at a time (bounds memory at B · chunk_size scores).

        Returns:
          (``rows [B, k]`` corpus rows best first, −1 where fewer than k items qualify;
          ``scores [B, k]`` last-stage scores, −inf where missing).
        """
        qs, k = self.validate_cut(qs, k)
        retrieval = self._two_tower()
        corpus = {f: tf.cast(corpus[f], tf.int64) for f in F.ITEM_FEATURES}
        if corpus["video_id"].shape[0] == 0:
            raise ValueError("corpus is empty: recommend needs at least one item")
        if corpus_vectors is None:
            corpus_vectors = self.corpus_vectors(corpus, chunk_size)
        keys = tf.cast(corpus["video_id"] if corpus_keys is None else corpus_keys, tf.int64)
        context = {f: features[f] for f in F.USER_FEATURES + F.HISTORY_FEATURES}
        user = retrieval.user_vector(context, training=False)
        excluded = tf.zeros([tf.shape(user)[0], 0], tf.int64) if exclude is None else tf.cast(exclude, tf.int64)
        # Excluded items can only take places in the top q_1 + E; drop them afterwards.
        values, rows = brute_force_top_k(user, corpus_vectors, qs[0] + tf.shape(excluded)[1], chunk_size)
        hit = tf.reduce_any(tf.equal(tf.gather(keys, rows)[:, :, None], excluded[:, None, :])
                            & (excluded[:, None, :] >= 0), axis=-1)
        values, best = tf.math.top_k(tf.where(hit, tf.constant(-float("inf")), values),
                                     k=tf.minimum(qs[0], tf.shape(values)[-1]))
        rows = tf.gather(rows, best, batch_dims=1)

        def gather(at):  # the survivors' features; padding (−1) gets index 0
            real = at >= 0
            items = {f: tf.where(real, tf.gather(v, tf.maximum(at, 0)), tf.zeros_like(at)) for f, v in corpus.items()}
            return {**context, **items, "mask": tf.cast(real, tf.float32)}

        return survivor_cascade(self._later_stages(), gather, values, rows, qs[1:], k)

    def corpus_vectors(self, corpus: Mapping[str, tf.Tensor], chunk_size: int = CHUNK_SIZE) -> tf.Tensor:
        """``[M, d]`` the retrieval stage's item vectors of ``corpus`` (item features ``[M]``)."""
        retrieval = self._two_tower()
        size = int(tf.shape(corpus["video_id"])[0])
        parts = [retrieval.item_vectors({f: tf.cast(corpus[f][None, i: i + chunk_size], tf.int64)
                                         for f in F.ITEM_FEATURES})[0]
                 for i in range(0, max(size, 1), chunk_size)]
        return tf.concat(parts, 0)

    @property
    def has_two_tower_retrieval(self) -> bool:
        """Whether the first stage is a two-tower model (``user_vector`` / ``item_vectors``),
        which :meth:`recommend` needs."""
        return all(hasattr(self.stage_models[0], a) for a in ("user_vector", "item_vectors"))

    def _two_tower(self):
        retrieval = self.stage_models[0]
        if not self.has_two_tower_retrieval:
            raise ValueError(f"recommending from a corpus needs a two-tower retrieval stage (user_vector / "
                             f"item_vectors); stage {retrieval.name!r} is a {type(retrieval).__name__}")
        return retrieval

    def _later_stages(self):
        return [lambda f, stage=stage: stage(f, training=False) for stage in self.stage_models[1:]]

    def validate_cut(self, qs: Sequence[int] | None = None, k: int | None = None) -> tuple[tuple[int, ...], int]:
        """``(qs, k)`` defaulted to the model's and checked as a :class:`CascadeSpec` checks them:
        one positive, non-increasing q per stage and 0 < k ≤ q_T; raises ValueError naming the
        bad value."""
        cut = dataclasses.replace(self.spec, qs=tuple(qs or self.qs), k=self.k if k is None else k)
        return cut.qs, cut.k

    def training_callbacks(self, options: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
        """The Keras callbacks the stages need during ``fit`` (``StageModel.training_callbacks``)."""
        return [callback for stage in self.stage_models if isinstance(stage, StageModel)
                for callback in stage.training_callbacks(options)]

    def training_metrics(self) -> dict[str, Any]:
        """What the stages report once training ends (``StageModel.training_metrics``; the
        earliest stage wins a key two stages report)."""
        out: dict[str, Any] = {}
        for stage in self.stage_models:
            if isinstance(stage, StageModel):
                for key, value in stage.training_metrics().items():
                    out.setdefault(key, value)
        return out

    def get_config(self) -> dict[str, Any]:
        """What rebuilds this cascade, as JSON values: ``build_cascade(**config)`` and
        :meth:`from_config` give a model of the same spec, loss, options and vocabularies
        (initial weights; restore trained ones with ``tf.train.Checkpoint``).

        Returns:
          ``{"vocab_sizes", "embedding_dim", "initialization", "spec": CascadeSpec.get_config(),
          "loss", "loss_options", "data_fingerprint"}``.

        Raises:
          NotImplementedError: the cascade is not one ``build_cascade`` builds: a stage that is
            not a ``StageModel`` or has other than its default options, stages of different
            vocabularies, embedding widths or initialisations, or a loss given as an object.
        """
        stages = self.stage_models
        for i, stage in enumerate(stages):
            if not isinstance(stage, StageModel):
                raise NotImplementedError(f"stage {i} ({type(stage).__name__}) is not a StageModel: this cascade "
                                          "has no config (build it with build_cascade)")
            options = _non_default_options(stage)
            if options:
                raise NotImplementedError(f"stage {i} ({type(stage).__name__}) has non-default options {options}: "
                                          "build_cascade cannot rebuild it from a config")
            if (stage.vocab_sizes, stage.embedding_dim, stage.initialization) != (
                    stages[0].vocab_sizes, stages[0].embedding_dim, stages[0].initialization):
                raise NotImplementedError(f"stage {i} has other vocab_sizes, embedding_dim or initialization than "
                                          "stage 0: "
                                          "build_cascade cannot rebuild it from a config")
        if self.loss_name is None:
            raise NotImplementedError(f"the loss is a {type(self.cascade_loss).__name__} object, not a name: "
                                      "build_cascade cannot rebuild it from a config")
        return {"vocab_sizes": dict(stages[0].vocab_sizes), "embedding_dim": stages[0].embedding_dim,
                "initialization": stages[0].initialization, "spec": self.spec.get_config(), "loss": self.loss_name, "loss_options": dict(self.loss_options),
                "data_fingerprint": self.data_fingerprint}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects=None) -> CascadeModel:
        """The cascade of a :meth:`get_config` dict (also one of a ``config.json`` written before
        ``CascadeSpec``, whose shape was in ``stages``, ``stage_models``, ``qs`` and ``k``).

        Raises:
          ValueError: a key is unknown or a value invalid (naming it).
        """
        config = dict(config)
        if "spec" not in config:
            legacy = {key: config.pop(key) for key in LEGACY_SPEC_KEYS if key in config}
            config["spec"] = CascadeSpec.default(int(legacy.get("stages", 2)), stage_kinds=legacy.get("stage_models"),
                                                 qs=legacy.get("qs"), k=legacy.get("k"))
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown CascadeModel config key {unknown[0]!r} (value {config[unknown[0]]!r}); "
                             f"known keys: {list(CONFIG_KEYS)}")
        return build_cascade(**config)

    def save_config(self, path: str) -> None:
        """Writes :meth:`get_config` as JSON (``config.json`` of a trained model)."""
        with tf.io.gfile.GFile(path, "w") as fh:
            fh.write(json.dumps(self.get_config(), indent=2, sort_keys=True) + "\n")


def _non_default_options(stage: StageModel) -> dict[str, Any]:
    """The entries of ``stage.get_config()`` beyond vocabularies, width, initialisation and name that differ
    from the defaults of its class' constructor."""
    defaults = inspect.signature(type(stage).__init__).parameters
    as_json = lambda value: json.loads(json.dumps(value))  # noqa: E731  (tuples and lists compare equal)
    config = {key: as_json(value) for key, value in stage.get_config().items()
              if key not in ("vocab_sizes", "embedding_dim", "initialization", "name")}
    return {key: value for key, value in config.items()
            if key not in defaults or value != as_json(defaults[key].default)}


def build_cascade(vocab_sizes: Mapping, spec: CascadeSpec | Mapping | None = None, *, loss="lcron",
                  embedding_dim: int = 8, loss_options: Mapping | None = None, seed: int | None = None,
                  data_fingerprint: str | None = None, stages: int | None = None,
                  initialization: str = "reference") -> CascadeModel:
    """Builds a cascade of the stage models ``spec`` names.

    ``build_cascade(**model.get_config())`` rebuilds ``model`` (:meth:`CascadeModel.get_config`).

    Args:
      vocab_sizes: ``{feature: size}``, or preprocessing metadata (``load_metadata(out_dir)``)
        holding them as ``vocab_sizes``; the metadata's ``fingerprint`` becomes the model's
        ``data_fingerprint`` (``tfcascade.data.fingerprint``).
      spec: the cascade's shape: a :class:`CascadeSpec` or its ``get_config()`` dict (default:
        ``CascadeSpec.default(stages or 2)``); e.g. ``CascadeSpec.default(3, stage_kinds=("dssm",
        "tarq", "din"))`` puts TARQ in the pre-ranking slot.
      loss, loss_options, data_fingerprint: see :class:`CascadeModel`.
      embedding_dim: width of every stage's feature embeddings.
      seed: seeds the weight initialisation.
      initialization: how every stage's weights start: ``"reference"`` (PyTorch's defaults, as
        the LCRON / DFTopK reference code) or ``"keras"`` (``tfcascade.layers.initialization``).
      stages: shorthand for ``spec=CascadeSpec.default(stages)``.

    Raises:
      ValueError: naming a bad value (spec, stages, loss name or options).
    """
    if isinstance(spec, Mapping):
        spec = CascadeSpec.from_config(spec)
    elif spec is not None and not isinstance(spec, CascadeSpec):
        raise TypeError(f"spec must be a CascadeSpec or its config dict, got spec={spec!r}")
    if spec is None:
        spec = CascadeSpec.default(2 if stages is None else stages)
    elif stages is not None and stages != spec.num_stages:
        raise ValueError(f"stages={stages!r} contradicts the spec's {spec.num_stages} stages")
    vocab = dict(vocab_sizes.get("vocab_sizes", vocab_sizes))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    models = [STAGE_CLASSES[kind](vocab, embedding_dim, initialization=initialization, name=f"{name}_{kind}")
              for kind, name in zip(spec.stage_kinds, spec.stage_names)]
    return CascadeModel(models, spec, loss=loss, loss_options=loss_options,
                        data_fingerprint=data_fingerprint or vocab_sizes.get("fingerprint"))
