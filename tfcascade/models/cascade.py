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

import json
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfcascade import features as F
from tfcascade._keras import keras
from tfcascade.losses import registry
from tfcascade.losses.base import DEFAULT_QS
from tfcascade.metrics import NDCG, JointRecall, StageRecall
from tfcascade.models.din import DIN
from tfcascade.models.dssm import DSSM
from tfcascade.models.mlp import MLPPreranker
from tfcascade.models.tarq import TARQ
from tfcascade.ops.brute_force_topk import CHUNK_SIZE, brute_force_top_k
from tfcascade.ops.cascade_select import check_qs, survivor_cascade

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
        """``(qs, k)`` defaulted to the model's and checked: one positive, non-increasing q per
        stage and 0 < k ≤ q_T; raises ValueError naming the bad value."""
        qs = tuple(int(q) for q in (qs or self.qs))
        k = int(self.k if k is None else k)
        if len(qs) != len(self.stage_models):
            raise ValueError(f"qs needs one value per stage ({len(self.stage_models)}), got qs={list(qs)}")
        check_qs(qs)
        if not 0 < k <= qs[-1]:
            raise ValueError(f"k must be in 1..{qs[-1]} (the last stage's q), got k={k}")
        return qs, k

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
