"""SavedModel export of a trained cascade for TF Serving, and atomic version publishing.

Signatures (all inputs are RAW ids, int64, −1 = padding; vocabulary lookups run inside the
graph from the vocab files shipped as assets; unknown ids map to index 0):

- ``serving_default``: the whole cascade on a candidate list. Inputs: user features ``[B]``
  (``features.USER_FEATURES``: user_id, device_id, age, gender, province and the request's
  weekday, hour and minute), history ``[B, H]`` (``features.HISTORY_FEATURES``: video, author,
  both categories and upload type of each past view), candidate features ``[B, N]``
  (``features.ITEM_FEATURES``: video_id, author_id, category_level_one, category_level_two,
  upload_type and the upload's weekday, hour and minute) for any N ≥ 0; the time features
  are UTC weekday (Monday = 0), hour and minute (``features.time_parts``); a candidate whose ``video_id`` is −1 is
  padding. Retrieval scores the N candidates, each later stage only the survivors of the one
  before (``CascadeModel.select``). Outputs ``top_k_indices`` (positions in the input list),
  ``top_k_video_ids`` (raw ids) and ``top_k_scores`` (last-stage scores), ``[B, K]``, padded
  with −1 / −inf when fewer than K candidates survive.
- ``recommend``: from a user to a ranked top-K over the whole item corpus exported with the
  model (``tfcascade.serving.item_table``). Inputs: the user features and history only, and optionally
  ``exclude_video_id`` ``[B, E]`` (raw ids never to return, e.g. already shown; its
  SignatureDef default is empty). The retrieval tower's item vectors of every corpus item are
  computed at export and stored in the model; retrieval is an exact brute-force inner-product
  top-q in chunks, then the later stages score the survivors (``CascadeModel.recommend``).
  Outputs ``top_k_video_ids`` and ``top_k_scores`` ``[B, K]``. A new corpus is a new version.
- one signature per stage, named after the stage (``CascadeSpec.stage_names``; the ranking
  stage is served as ``rank``): ``retrieval``, ``prerank`` (three-stage cascades only),
  ``rank`` by default; its scores ``[B, N]`` on the whole list (same inputs as
  ``serving_default``).

Bad requests fail at the boundary with an InvalidArgumentError naming the input: ids < −1,
candidate features (or history features) of different shapes, batch sizes that differ.

``assets.extra/tf_serving_warmup_requests`` holds real requests for every signature (eval
examples mapped back to raw ids) so TF Serving warms the graph up before it reports the
version as available; an export that cannot build them fails.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfcascade import features as F
from tfcascade.models.spec import DEFAULT_STAGE_NAMES
from tfcascade.ops.brute_force_topk import CHUNK_SIZE
from tfcascade.serving.item_table import ItemTable, items_from_csv, items_from_examples

ID_INPUTS = F.USER_FEATURES + F.HISTORY_FEATURES + F.ITEM_FEATURES
RECOMMEND_INPUTS = F.USER_FEATURES + F.HISTORY_FEATURES + ("exclude_video_id",)
# A stage's signature is its name, but for these (the served API's older names).
SIGNATURE_ALIASES = {"ranking": "rank"}


def stage_signature_names(stage_names: Sequence[str]) -> tuple[str, ...]:
    """The serving signature of each stage, earliest first (``SIGNATURE_ALIASES``)."""
    return tuple(SIGNATURE_ALIASES.get(name, name) for name in stage_names)


# The stage signatures of the default cascades.
SIGNATURE_STAGE_NAMES = {n: stage_signature_names(DEFAULT_STAGE_NAMES[n]) for n in DEFAULT_STAGE_NAMES}


def input_signature(names: Sequence[str] = ID_INPUTS) -> dict[str, tf.TensorSpec]:
    """The raw-id TensorSpecs of ``names``: user features ``[B]``, the others ``[B, ·]``."""
    return {f: tf.TensorSpec([None] if f in F.USER_FEATURES else [None, None], tf.int64, name=f) for f in names}


class CascadeServingModule(tf.Module):
    """Raw ids → vocabulary indices → the cascade; see the module docstring.

    Args:
      model: a trained ``CascadeModel``.
      vocab_dir: the preprocessing output's ``vocab/``.
      k: items returned per request, 1 ≤ k ≤ q_T (default the model's, ``CascadeSpec.k``).
      qs: per-stage cuts (default the model's, ``CascadeSpec.qs``).
      items: the corpus of ``recommend`` (None: no ``recommend`` signature).
      chunk_size: corpus items scored at a time by ``recommend``.
    """

    def __init__(self, model, vocab_dir: str, k: int | None = None, qs: Sequence[int] | None = None,
                 items: ItemTable | None = None, chunk_size: int = CHUNK_SIZE):
        super().__init__()
        self.model = model
        self.qs, self.k = model.validate_cut(qs, k)
        self.chunk_size = int(chunk_size)
        self.tables = {}
        self.assets = {}
        for feature in F.USER_FEATURES + F.ITEM_FEATURES:
            path = os.path.join(vocab_dir, f"{feature}.txt")
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"missing vocabulary {path}")
            self.assets[feature] = tf.saved_model.Asset(path)
            init = tf.lookup.TextFileInitializer(
                self.assets[feature], key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64, value_index=tf.lookup.TextFileIndex.LINE_NUMBER)
            self.tables[feature] = tf.lookup.StaticHashTable(init, default_value=-1)
        self.items = None
        if items is not None:
            corpus = {f: tf.constant(items.indices[f], tf.int64) for f in F.ITEM_FEATURES}
            self.items = {f: tf.Variable(v, trainable=False, name=f"corpus_{f}") for f, v in corpus.items()}
            self.item_vectors = tf.Variable(model.corpus_vectors(corpus, self.chunk_size), trainable=False,
                                            name="corpus_item_vectors")
            self.item_video_ids = tf.Variable(items.video_ids, trainable=False, name="corpus_video_ids")

    def to_indices(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Raw-id inputs → the model's feature dict (indices, and ``mask`` for candidates)."""
        out = {}
        for name in raw:
            if name in self.tables or name in F.HISTORY_TO_ITEM:
                table = self.tables[F.HISTORY_TO_ITEM.get(name, name)]
                out[name] = table.lookup(tf.cast(raw[name], tf.int64)) + 1  # unknown (−1) → 0
        if "video_id" in raw:
            out["mask"] = tf.cast(raw["video_id"] >= 0, tf.float32)
        return out

    @staticmethod
    def check_inputs(raw: Mapping[str, tf.Tensor]) -> list[tf.Operation]:
        """Assertions on a request: ids ≥ −1, one shape per feature group, one batch size."""
        checks = [tf.debugging.assert_greater_equal(
            value, tf.constant(-1, tf.int64), message=f"input {name} holds an id < -1 (-1 is padding)")
            for name, value in raw.items()]
        batch = tf.shape(raw[F.USER_FEATURES[0]])[0]
        for group in (F.USER_FEATURES, F.HISTORY_FEATURES, F.ITEM_FEATURES):
            present = [name for name in group if name in raw]
            for name in present[1:]:
                checks.append(tf.debugging.assert_equal(
                    tf.shape(raw[name]), tf.shape(raw[present[0]]),
                    message=f"inputs {present[0]} and {name} must have the same shape"))
            if present:
                checks.append(tf.debugging.assert_equal(
                    tf.shape(raw[present[0]])[0], batch,
                    message=f"inputs {F.USER_FEATURES[0]} and {present[0]} must have the same batch size"))
        if "exclude_video_id" in raw:
            exclude = tf.shape(raw["exclude_video_id"])
            checks.append(tf.debugging.Assert(
                tf.logical_or(tf.equal(exclude[1], 0), tf.equal(exclude[0], batch)),
                ["input exclude_video_id must have the batch size of user_id (or no column); shapes",
                 exclude, batch]))
        return checks

    def _cascade(self, **raw):
        with tf.control_dependencies(self.check_inputs(raw)):
            feats = self.to_indices(raw)
        idx, values = self.model.select(feats, self.qs, self.k)
        return {"top_k_indices": idx, "top_k_scores": values,
                "top_k_video_ids": _take_or_pad(tf.cast(raw["video_id"], tf.int64), idx)}

    def _recommend(self, **raw):
        with tf.control_dependencies(self.check_inputs(raw)):
            feats = self.to_indices(raw)
        rows, values = self.model.recommend(
            feats, self.items, self.item_vectors, self.qs, self.k, corpus_keys=self.item_video_ids,
            exclude=raw["exclude_video_id"], chunk_size=self.chunk_size)
        return {"top_k_scores": values, "top_k_video_ids": _take_or_pad(self.item_video_ids, rows)}

    def _stage(self, index: int, **raw):
        with tf.control_dependencies(self.check_inputs(raw)):
            feats = self.to_indices(raw)
        return {"scores": self.model.stage_models[index](feats, training=False)}

    def signatures(self) -> dict:
        spec = input_signature()
        out = {"serving_default": tf.function(lambda **raw: self._cascade(**raw), autograph=False).get_concrete_function(**spec)}
        names = stage_signature_names(self.model.stage_names)
        taken = set(out) | {"recommend"}
        for name in names:
            if name in taken:
                raise ValueError(f"stage name {name!r} gives a signature name already taken: rename the stage "
                                 f"(CascadeSpec.stage_names={list(self.model.stage_names)})")
            taken.add(name)
        for i, name in enumerate(names):
            out[name] = tf.function(lambda i=i, **raw: self._stage(i, **raw), autograph=False).get_concrete_function(**spec)
        if self.items is not None:
            out["recommend"] = self._recommend_function()
        return out

    def _recommend_function(self):
        names = RECOMMEND_INPUTS

        def recommend(*args, **kwargs):
            bound = recommend.__signature__.bind(*args, **kwargs)
            bound.apply_defaults()
            return self._recommend(**bound.arguments)

        # A Python default on the last argument becomes the SignatureDef's default for it, so a
        # request may leave exclude_video_id out.
        parameter = inspect.Parameter
        recommend.__signature__ = inspect.Signature(
            [parameter(n, parameter.POSITIONAL_OR_KEYWORD) for n in names[:-1]]
            + [parameter(names[-1], parameter.POSITIONAL_OR_KEYWORD, default=tf.zeros([1, 0], tf.int64))])

        spec = input_signature(names)
        # Handed to tf.saved_model.save as a tf.function (not a concrete function): only then
        # does the SignatureDef record the default.
        return tf.function(recommend, input_signature=[spec[n] for n in names], autograph=False)


def signature_inputs(fn) -> list[str]:
    """The input names of a concrete function, whether traced from kwargs or an input_signature."""
    if not hasattr(fn, "structured_input_signature"):  # a tf.function with an input_signature
        fn = fn.get_concrete_function()
    args, kwargs = fn.structured_input_signature
    return ([spec.name for spec in args if isinstance(spec, tf.TensorSpec)]
            + [name for name, spec in kwargs.items() if isinstance(spec, tf.TensorSpec)])


def _take_or_pad(ids: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """``ids`` (``[B, N]`` per row or ``[M]`` shared, M ≥ 1) at ``positions``, −1 where a position is −1."""
    if ids.shape.rank == 2:  # N may be 0: gather from the list with a padding column
        padded = tf.pad(ids, [[0, 0], [0, 1]], constant_values=-1)
        return tf.gather(padded, tf.where(positions >= 0, positions, tf.shape(ids, out_type=tf.int64)[1]), batch_dims=1)
    # The corpus is large: gather, then mask (no per-request copy of it).
    return tf.where(positions >= 0, tf.gather(ids, tf.maximum(positions, 0)), tf.constant(-1, tf.int64))


def write_saved_model(model, export_dir: str, vocab_dir: str, k: int | None = None, qs: Sequence[int] | None = None,
                      warmup_requests: Sequence[Mapping[str, np.ndarray]] | None = None,
                      examples: str | None = None, items: ItemTable | str | None = None,
                      recommend: bool | None = None, chunk_size: int = CHUNK_SIZE) -> str:
    """Writes the serving SavedModel of ``model`` to ``export_dir``.

    Args:
      model: a trained ``CascadeModel``.
      export_dir: the SavedModel folder to write.
      vocab_dir: the preprocessing output's ``vocab/`` (raw id per line; line i ↔ index i + 1).
      k: items returned per request (1 ≤ k ≤ q_T); ``qs`` per-stage cuts (default the model's
        ``CascadeSpec`` k and qs).
      warmup_requests: raw-id requests (``ID_INPUTS`` ``[1, ·]`` each) for
        ``assets.extra/tf_serving_warmup_requests``, written for every signature (default:
        two eval examples of ``examples``, mapped back to raw ids).
      examples: the preprocessing output the default warmup requests (its eval split) and item
        table (its train split) come from (default: the folder holding ``vocab_dir``).
      items: the corpus of ``recommend``: an :class:`ItemTable`, a CSV path
        (``items_from_csv``) or None for the training examples' items.
      recommend: export the ``recommend`` signature (default: when the first stage is a
        two-tower model).
      chunk_size: corpus items ``recommend`` scores at a time (memory ∝ B · chunk_size).

    Returns:
      ``export_dir``.

    Raises:
      ValueError: k or qs out of range, ``recommend=True`` without a two-tower retrieval
        stage, or no warmup request could be built.
    """
    model.validate_cut(qs, k)
    recommend = model.has_two_tower_retrieval if recommend is None else bool(recommend)
    if recommend:
        model._two_tower()  # raises, naming the stage, when the first stage is not a two-tower model
    source = examples if examples is not None else os.path.dirname(os.path.normpath(vocab_dir))
    vocabularies = _vocabularies(vocab_dir)
    table = None
    if recommend:
        table = (items if isinstance(items, ItemTable) else items_from_csv(items, vocabularies) if items
                 else items_from_examples(source, vocabularies, "train"))
    if warmup_requests is None:
        warmup_requests = default_warmup_requests(source, vocabularies)
    if not warmup_requests:
        raise ValueError("warmup_requests is empty: give at least one request")
    module = CascadeServingModule(model, vocab_dir, k, qs, table, chunk_size)
    signatures = module.signatures()
    tf.saved_model.save(module, export_dir, signatures=signatures)
    write_warmup(export_dir, warmup_requests, signatures)
    return export_dir


def _vocabularies(vocab_dir: str) -> dict[str, list[int]]:
    from tfcascade.data.tfdata import load_vocabularies

    return load_vocabularies(os.path.dirname(os.path.normpath(vocab_dir)))


def default_warmup_requests(examples: str | Sequence[str], vocabularies: Mapping[str, Sequence[int]],
                            count: int = 2) -> list[dict]:
    """``count`` eval examples of ``examples`` with ids mapped back to raw values.

    Raises:
      ValueError: naming ``examples`` when no eval example can be read.
    """
    from tfcascade.data.tfdata import make_dataset

    try:
        batch = next(iter(make_dataset(examples, "eval", batch_size=count, shuffle=False)))
    except (FileNotFoundError, ValueError, StopIteration, tf.errors.NotFoundError) as err:
        raise ValueError(f"cannot build warmup requests from the eval examples of {examples!r}: "
                         f"{err or 'no example'}") from None
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, vocabularies)
    return [{name: value[i: i + 1] for name, value in raw.items()} for i in range(len(raw["user_id"]))]


UNKNOWN_RAW_ID = 2**62  # a raw id no vocabulary holds


def raw_from_indices(batch: Mapping[str, np.ndarray], vocabularies: Mapping[str, Sequence[int]]) -> dict:
    """Inverse of the vocabulary lookup, for building requests from preprocessed examples.

    Index 0 becomes −1 (padding) where the example has no item and ``UNKNOWN_RAW_ID`` where a
    real candidate's id was out of vocabulary, so the served model sees the same features.
    """
    raw = {}
    for name in ID_INPUTS:
        table = np.array([UNKNOWN_RAW_ID] + list(vocabularies[F.HISTORY_TO_ITEM.get(name, name)]), np.int64)
        raw[name] = table[np.asarray(batch[name])]
    for name in F.HISTORY_FEATURES:
        raw[name] = np.where(np.asarray(batch[name]) == 0, -1, raw[name])
    raw["video_id"] = np.where(np.asarray(batch["mask"]) > 0, raw["video_id"], -1)
    return raw


def write_warmup(export_dir: str, requests: Sequence[Mapping[str, np.ndarray]], signatures: Mapping,
                 model_name: str = "cascade") -> str:
    """Writes TF Serving warmup records: each request for every signature (``PredictionLog``).

    Each signature gets the request's inputs it takes; ``recommend`` excludes the request's
    history (``exclude_video_id`` = ``hist_video_id``), as a caller hiding seen items would.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    folder = os.path.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(folder)
    path = os.path.join(folder, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            request = {**request, "exclude_video_id": np.asarray(request["hist_video_id"])}
            for name, fn in sorted(signatures.items()):
                pred = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
                for key in signature_inputs(fn):
                    pred.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(request[key], np.int64)))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=pred))
                writer.write(log.SerializeToString())
    return path


_VERSION = re.compile(r"^\d+$")
_TMP_PREFIX = ".tmp-"
_TMP_NAME = re.compile(r"^\.tmp-\d+-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _remove_stale_publishes(base: str, stale_after_s: float) -> list[str]:
    """Removes ``.tmp-<version>-<host>-<pid>-<id>`` folders of dead local processes or older
    than ``stale_after_s``; returns what was removed."""
    import time

    removed = []
    for name in tf.io.gfile.listdir(base):
        name = name.rstrip("/")
        if not name.startswith(_TMP_PREFIX):
            continue
        path = os.path.join(base, name)
        owner = _TMP_NAME.match(name)
        dead = bool(owner) and owner["host"] == socket.gethostname() and not _process_alive(int(owner["pid"]))
        try:
            old = time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9 > stale_after_s
        except tf.errors.NotFoundError:
            continue
        if dead or old:
            tf.io.gfile.rmtree(path)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_version(saved_model_dir: str, serving_dir: str, model_name: str = "cascade",
                    version: int | None = None, stale_after_s: float = 3600.0) -> str:
    """Copies a SavedModel to ``<serving_dir>/<model_name>/<version>/`` atomically.

    The copy goes to a hidden temporary folder beside the target and is renamed into place, so
    TF Serving (which polls the model folder) never sees a partial version. ``version``
    defaults to one more than the highest existing numeric version (1 for the first).
    Temporary folders a killed publish left behind are removed first: those of a process of
    this host that no longer runs, and any older than ``stale_after_s``.

    Raises:
      FileNotFoundError: ``saved_model_dir`` holds no saved_model.pb.
      FileExistsError: the version already exists (versions are never overwritten).
    """
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in saved_model_dir={saved_model_dir!r}")
    base = os.path.join(serving_dir, model_name)
    tf.io.gfile.makedirs(base)
    _remove_stale_publishes(base, stale_after_s)
    existing = [int(v) for v in tf.io.gfile.listdir(base) if _VERSION.match(v.rstrip("/"))]
    if version is None:
        version = max(existing, default=0) + 1
    if int(version) <= 0:
        raise ValueError(f"version must be a positive integer, got version={version!r}")
    target = os.path.join(base, str(int(version)))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"version {version} of {model_name!r} already exists at {target}")
    tmp = os.path.join(base, f"{_TMP_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _copy_tree(saved_model_dir, tmp)
        tf.io.gfile.rename(tmp, target)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
    return target


def _copy_tree(src: str, dst: str) -> None:
    if "://" not in src and "://" not in dst:
        shutil.copytree(src, dst)
        return
    for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, src)
        tf.io.gfile.makedirs(os.path.join(dst, rel))
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(dst, rel, name), overwrite=True)
