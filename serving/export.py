"""SavedModel export of a trained cascade for TF Serving, and atomic version publishing.

Signatures (all inputs are RAW ids, int64; vocabulary lookups run inside the graph from the
vocab files shipped as assets; unknown ids map to index 0):

- ``serving_default``: the whole cascade in one call. Inputs: user features ``[B]``
  (user_id, device_id, age, gender, province), history ``hist_video_id``/``hist_author_id``
  ``[B, H]`` (pad with −1), candidate features ``[B, N]`` (video_id, author_id,
  category_level_one, category_level_two, upload_type) for any N; a candidate whose
  ``video_id`` is −1 is padding. Each stage keeps its top-q of what the previous kept; outputs
  ``top_k_indices`` (positions in the input list), ``top_k_video_ids`` (raw ids) and
  ``top_k_scores`` (last-stage scores), ``[B, K]``, padded with −1 / −inf when fewer than K
  candidates survive (N < K or padding).
- ``retrieval``, ``prerank`` (three-stage cascades only), ``rank``: one stage's scores
  ``[B, N]`` on the whole list.

``assets.extra/tf_serving_warmup_requests`` holds real requests (eval examples mapped back to
raw ids) so TF Serving warms the graph up before it reports the version as available.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfcascade import features as F
from tfcascade.ops.cascade_select import cascade_select

ID_INPUTS = F.USER_FEATURES + F.HISTORY_FEATURES + F.ITEM_FEATURES
SIGNATURE_STAGE_NAMES = {2: ("retrieval", "rank"), 3: ("retrieval", "prerank", "rank")}


def input_signature() -> dict[str, tf.TensorSpec]:
    spec = {f: tf.TensorSpec([None], tf.int64, name=f) for f in F.USER_FEATURES}
    spec.update({f: tf.TensorSpec([None, None], tf.int64, name=f) for f in F.HISTORY_FEATURES + F.ITEM_FEATURES})
    return spec


class CascadeServingModule(tf.Module):
    """Raw ids → vocabulary indices → the cascade; see the module docstring."""

    def __init__(self, model, vocab_dir: str, k: int = 10, qs: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.k = int(k)
        self.qs = tuple(int(q) for q in (qs or model.qs))
        if len(self.qs) != len(model.stage_models):
            raise ValueError(f"qs={self.qs} needs one value per stage ({len(model.stage_models)})")
        if self.k > self.qs[-1]:
            raise ValueError(f"k={self.k} exceeds the last stage's q={self.qs[-1]}")
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
        self.video_ids = tf.Variable(self._raw_ids(os.path.join(vocab_dir, "video_id.txt")), trainable=False,
                                     name="video_vocabulary")

    @staticmethod
    def _raw_ids(path: str) -> np.ndarray:
        with tf.io.gfile.GFile(path) as fh:
            return np.array([-1] + [int(v) for v in fh.read().split()], np.int64)

    def to_indices(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Raw-id inputs → the model's feature dict (indices, mask)."""
        out = {}
        for name in ID_INPUTS:
            table = self.tables[F.HISTORY_TO_ITEM.get(name, name)]
            out[name] = table.lookup(tf.cast(raw[name], tf.int64)) + 1  # unknown (−1) → 0
        out["mask"] = tf.cast(raw["video_id"] >= 0, tf.float32)
        return out

    def _cascade(self, **raw):
        feats = self.to_indices(raw)
        scores = self.model.stage_scores(feats)
        _, idx, values = cascade_select(scores, self.qs, feats["mask"])
        idx, values = idx[:, : self.k], values[:, : self.k]
        pad = self.k - tf.shape(idx)[1]  # N < K: pad to a fixed width
        idx = tf.pad(idx, [[0, 0], [0, pad]], constant_values=-1)
        values = tf.pad(values, [[0, 0], [0, pad]], constant_values=-float("inf"))
        video = tf.where(idx >= 0, tf.gather(tf.cast(raw["video_id"], tf.int64), tf.maximum(idx, 0), batch_dims=1),
                         tf.constant(-1, tf.int64))
        return {"top_k_indices": idx, "top_k_scores": values, "top_k_video_ids": video}

    def _stage(self, index: int, **raw):
        feats = self.to_indices(raw)
        return {"scores": self.model.stage_models[index](feats, training=False)}

    def signatures(self) -> dict:
        spec = input_signature()
        out = {"serving_default": tf.function(lambda **raw: self._cascade(**raw)).get_concrete_function(**spec)}
        names = SIGNATURE_STAGE_NAMES[len(self.model.stage_models)]
        for i, name in enumerate(names):
            out[name] = tf.function(lambda i=i, **raw: self._stage(i, **raw)).get_concrete_function(**spec)
        return out


def write_saved_model(model, export_dir: str, vocab_dir: str, k: int = 10, qs: Sequence[int] | None = None,
                      warmup_requests: Sequence[Mapping[str, np.ndarray]] | None = None) -> str:
    """Writes the serving SavedModel of ``model`` to ``export_dir``.

    Args:
      model: a trained ``CascadeModel``.
      export_dir: the SavedModel folder to write.
      vocab_dir: the preprocessing output's ``vocab/`` (raw id per line; line i ↔ index i + 1).
      k: items returned by ``serving_default``; ``qs`` per-stage cuts (default the model's).
      warmup_requests: raw-id feature dicts for ``assets.extra/tf_serving_warmup_requests``
        (default: two eval examples of the data next to ``vocab_dir``, mapped back to raw ids).

    Returns:
      ``export_dir``.
    """
    module = CascadeServingModule(model, vocab_dir, k, qs)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    if warmup_requests is None:
        warmup_requests = default_warmup_requests(os.path.dirname(os.path.normpath(vocab_dir)))
    if warmup_requests:
        write_warmup(export_dir, warmup_requests)
    return export_dir


def default_warmup_requests(data_dir: str, count: int = 2) -> list[dict]:
    """Eval examples of ``data_dir`` with ids mapped back to raw values (empty if none)."""
    from tfcascade.data.tfdata import load_vocabularies, make_dataset

    try:
        vocab = load_vocabularies(data_dir)
        batch = next(iter(make_dataset(data_dir, "eval", batch_size=count, shuffle=False)))
    except (FileNotFoundError, StopIteration, tf.errors.NotFoundError):
        return []
    raw = raw_from_indices({k: v.numpy() for k, v in batch.items()}, vocab)
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


def write_warmup(export_dir: str, requests: Sequence[Mapping[str, np.ndarray]], model_name: str = "cascade") -> str:
    """Writes TF Serving warmup records (``PredictionLog`` of ``PredictRequest``s)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    folder = os.path.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(folder)
    path = os.path.join(folder, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            pred = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                              signature_name="serving_default"))
            for name in ID_INPUTS:
                pred.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(request[name], np.int64)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=pred))
            writer.write(log.SerializeToString())
    return path


_VERSION = re.compile(r"^\d+$")


def publish_version(saved_model_dir: str, serving_dir: str, model_name: str = "cascade",
                    version: int | None = None) -> str:
    """Copies a SavedModel to ``<serving_dir>/<model_name>/<version>/`` atomically.

    The copy goes to a hidden temporary folder beside the target and is renamed into place, so
    TF Serving (which polls the model folder) never sees a partial version. ``version``
    defaults to one more than the highest existing numeric version (1 for the first).

    Raises:
      FileNotFoundError: ``saved_model_dir`` holds no saved_model.pb.
      FileExistsError: the version already exists (versions are never overwritten).
    """
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in saved_model_dir={saved_model_dir!r}")
    base = os.path.join(serving_dir, model_name)
    tf.io.gfile.makedirs(base)
    existing = [int(v) for v in tf.io.gfile.listdir(base) if _VERSION.match(v.rstrip("/"))]
    if version is None:
        version = max(existing, default=0) + 1
    if int(version) <= 0:
        raise ValueError(f"version must be a positive integer, got version={version!r}")
    target = os.path.join(base, str(int(version)))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"version {version} of {model_name!r} already exists at {target}")
    tmp = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
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
