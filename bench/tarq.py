"""TARQ vs an MLP pre-ranker vs full DIN (target attention) as the pre-ranking stage.

Data: hand-made requests in the ``tfcascade.features`` layout (the simulator was not available
when this benchmark was written). Every video has a hidden topic vector; a user's 50-item
history is drawn around two to five interests; the click probability of a candidate is
``σ(γ · log mean_h exp(z_target · z_h / T) + b)`` with T = 0.1 — a target-attention ground truth, so a model
that sees the history per target (DIN) has the edge, and the question is how much of it TARQ
keeps. Reports test AUC, Recall@5 against the oracle's top-5 of each request, scoring cost in
microseconds per candidate for one request of N = 1,000 and 10,000 candidates, and codebook
utilisation (fraction of codes used by the catalogue, with and without dead-code resets).

    .venv/bin/python -m bench.tarq --quick      # seconds: tiny data, few steps
    .venv/bin/python -m bench.tarq              # the reported run

Timings are medians on 2 CPU cores shared with other jobs: noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2 (tf_keras) before TensorFlow loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import (  # noqa: E402
    RESULTS_DIR,
    markdown_table,
    plot_quality_vs_cost,
    serving_ms,
    write_results,
)
from tfcascade._keras import keras  # noqa: E402
from tfcascade.features import (  # noqa: E402
    HISTORY_LENGTH,
    HISTORY_TO_ITEM,
    ITEM_FEATURES,
    TIME_FEATURES,
    USER_FEATURES,
)
from tfcascade.layers.residual_quantizer import codebook_utilisation
from tfcascade.models.tarq import TARQ
from tfcascade.training.callbacks import CodebookMonitor  # noqa: E402

# ---------------------------------------------------------------------------------------
# Hand-made requests with a target-attention ground truth
# ---------------------------------------------------------------------------------------


class World:
    """Videos with topic vectors and users with interests; draws requests and click labels."""

    def __init__(self, num_videos=3000, num_users=2000, topics=16, seed=0):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.num_videos, self.num_users = num_videos, num_users
        centres = rng.normal(size=(topics, 8))
        self.video_topic = rng.integers(0, topics, num_videos)
        z = centres[self.video_topic] + 0.6 * rng.normal(size=(num_videos, 8))
        self.z = z / np.linalg.norm(z, axis=1, keepdims=True)
        self.z[0] = 0.0  # padding
        self.author = 1 + self.video_topic * 4 + rng.integers(0, 4, num_videos)
        self.cat1 = 1 + self.video_topic % 5
        self.cat2 = 1 + self.video_topic
        self.upload = rng.integers(1, 4, num_videos)
        self.user_interests = [rng.choice(topics, rng.integers(2, 6), replace=False) for _ in range(num_users)]
        self.by_topic = [np.flatnonzero(self.video_topic == t)[1:] if t == self.video_topic[0]
                         else np.flatnonzero(self.video_topic == t) for t in range(topics)]
        self.vocab = {"user_id": num_users + 1, "device_id": 6, "age": 8, "gender": 3, "province": 10,
                      "video_id": num_videos, "author_id": int(self.author.max()) + 1,
                      "category_level_one": 6, "category_level_two": topics + 1, "upload_type": 4,
                      **dict.fromkeys(TIME_FEATURES, 2)}  # a world without time: every time id is 1

    def requests(self, count: int, n: int) -> tuple[dict, np.ndarray, np.ndarray]:
        rng = self.rng
        users = rng.integers(1, self.num_users + 1, count)
        hist = np.zeros((count, HISTORY_LENGTH), np.int64)
        for r, u in enumerate(users):
            length = rng.integers(5, HISTORY_LENGTH + 1)
            topics = rng.choice(self.user_interests[u - 1], length)
            hist[r, :length] = [rng.choice(self.by_topic[t]) for t in topics]
        videos = rng.integers(1, self.num_videos, (count, n))
        # Half of the candidates come from the user's interests, half at random.
        for r, u in enumerate(users):
            topics = rng.choice(self.user_interests[u - 1], n // 2)
            videos[r, : n // 2] = [rng.choice(self.by_topic[t]) for t in topics]
        valid = hist > 0
        sims = np.einsum("rnd,rhd->rnh", self.z[videos], self.z[hist]) / 0.1
        sims = np.where(valid[:, None, :], sims, -np.inf)
        top = sims.max(-1, keepdims=True)
        relevance = (top + np.log(np.exp(sims - top).sum(-1, keepdims=True)))[..., 0]
        relevance = relevance - np.log(valid.sum(-1))[:, None]  # mean-exp: history length free
        prob = 1.0 / (1.0 + np.exp(-(0.5 * relevance - 3.5)))
        labels = (rng.random(prob.shape) < prob).astype(np.float32)
        features = {
            "user_id": users, "device_id": 1 + users % 5, "age": 1 + users % 7, "gender": 1 + users % 2,
            "province": 1 + users % 9, "hist_video_id": hist, "hist_author_id": np.where(valid, self.author[hist], 0),
            "hist_category_level_two": np.where(valid, self.cat2[hist], 0),
            "hist_category_level_one": np.where(valid, self.cat1[hist], 0),
            "hist_upload_type": np.where(valid, self.upload[hist], 0),
            "video_id": videos, "author_id": self.author[videos], "category_level_one": self.cat1[videos],
            "category_level_two": self.cat2[videos], "upload_type": self.upload[videos],
            **{name: np.ones_like(users if name.startswith("request") else videos) for name in TIME_FEATURES},
        }
        return {k: np.asarray(v, np.int64) for k, v in features.items()}, labels, prob


# ---------------------------------------------------------------------------------------
# Baselines (bench-local: the project's DIN / MLP stage models were not in the tree yet)
# ---------------------------------------------------------------------------------------


class _Embedded(keras.Model):
    def __init__(self, vocab, embedding_dim=8, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = {f: keras.layers.Embedding(vocab[f], embedding_dim, name=f"{f}_emb")
                           for f in USER_FEATURES + ITEM_FEATURES}

    def user_part(self, f):
        return tf.concat([self.embeddings[k](f[k]) for k in USER_FEATURES], -1)

    def item_part(self, f):
        return tf.concat([self.embeddings[k](f[k]) for k in ITEM_FEATURES], -1)

    def behaviour(self, f):
        return tf.concat([self.embeddings[HISTORY_TO_ITEM[k]](f[k]) for k in ("hist_video_id", "hist_author_id")], -1)


class MLPPreRanker(_Embedded):
    """MLP on [user features, mean-pooled history, item features] (no target attention)."""

    def __init__(self, vocab, units=(128, 64, 32), **kwargs):
        super().__init__(vocab, **kwargs)
        self.mlp = keras.Sequential([keras.layers.Dense(u, activation="relu") for u in units] + [keras.layers.Dense(1)])

    def call(self, f, training=False):
        items = self.item_part(f)
        valid = tf.cast(tf.not_equal(f["hist_video_id"], 0), tf.float32)[..., None]
        pooled = tf.reduce_sum(self.behaviour(f) * valid, 1) / tf.maximum(tf.reduce_sum(valid, 1), 1.0)
        ctx = tf.concat([self.user_part(f), pooled], -1)[:, None, :]
        ctx = tf.broadcast_to(ctx, tf.concat([tf.shape(items)[:2], tf.shape(ctx)[-1:]], 0))
        return tf.squeeze(self.mlp(tf.concat([ctx, items], -1)), -1)


class FullDIN(_Embedded):
    """DIN: per-candidate attention MLP over [q, k, q−k, q·k] of every history item, then MLP
    [128, 128, 32, 1] on [user, item, interest] (the reference ranking model's shape)."""

    def __init__(self, vocab, **kwargs):
        super().__init__(vocab, **kwargs)
        self.to_query = keras.layers.Dense(16)
        self.attention = keras.Sequential([keras.layers.Dense(36, activation="sigmoid"), keras.layers.Dense(1)])
        self.mlp = keras.Sequential([keras.layers.Dense(u, activation="relu") for u in (128, 128, 32)] + [keras.layers.Dense(1)])

    def call(self, f, training=False):
        items = self.item_part(f)  # [B, n, 8 * 8]
        q = self.to_query(items)[:, :, None, :]  # [B, n, 1, 16]
        k = self.behaviour(f)[:, None, :, :]  # [B, 1, H, 16]
        k = tf.broadcast_to(k, tf.concat([tf.shape(q)[:2], tf.shape(k)[2:]], 0))
        qb = tf.broadcast_to(q, tf.shape(k))
        w = tf.squeeze(self.attention(tf.concat([qb, k, qb - k, qb * k], -1)), -1)  # [B, n, H]
        w = w * tf.cast(tf.not_equal(f["hist_video_id"], 0), tf.float32)[:, None, :]
        interest = tf.einsum("bnh,bnhd->bnd", w, k)
        user = self.user_part(f)[:, None, :]
        user = tf.broadcast_to(user, tf.concat([tf.shape(items)[:2], tf.shape(user)[-1:]], 0))
        return tf.squeeze(self.mlp(tf.concat([user, items, interest], -1)), -1)


# ---------------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks)."""
    from scipy.stats import rankdata

    labels, scores = labels.ravel(), scores.ravel()
    ranks = rankdata(scores)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_vs_oracle(prob: np.ndarray, scores: np.ndarray, k: int = 5) -> float:
    truth = np.argsort(-prob, axis=1)[:, :k]
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, top, strict=True)]))


def predict(model, features, batch=256):
    out = []
    n = len(features["user_id"])
    for s in range(0, n, batch):
        out.append(model({k: v[s:s + batch] for k, v in features.items()}).numpy())
    return np.concatenate(out)


def train(model, features, labels, epochs, batch, callbacks=()):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    t0 = time.perf_counter()
    model.fit(features, labels, batch_size=batch, epochs=epochs, verbose=2, callbacks=list(callbacks))
    return time.perf_counter() - t0


def scoring_cost(model, world, n, catalogue=None):
    """Median ms to score one request of n candidates (compiled), the model's serving path;
    ``catalogue = (item_vectors, codes)`` of every video for TARQ."""
    feats, _, _ = world.requests(1, n)
    feats = {k: tf.constant(v) for k, v in feats.items()}
    return serving_ms(model, feats, None if catalogue is None else (*catalogue, feats["video_id"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data and sizes (seconds)")
    parser.add_argument("--train-requests", type=int, default=20000)
    parser.add_argument("--test-requests", type=int, default=4000)
    parser.add_argument("--candidates", type=int, default=20, help="candidates per training request")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook-size", type=int, default=64)
    parser.add_argument("--name", default="tarq")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_requests, args.test_requests, args.epochs = 600, 200, 1
    sizes = (1000,) if args.quick else (1000, 10000)
    tf.random.set_seed(0)
    world = World()
    train_f, train_y, _ = world.requests(args.train_requests, args.candidates)
    test_f, test_y, test_p = world.requests(args.test_requests, args.candidates)
    models = {
        "MLP pre-ranker": MLPPreRanker(world.vocab),
        "DIN (full target attention)": FullDIN(world.vocab),
        # Keras' initialisation, as the bench-local baselines (tfcascade.layers.initialization).
        "TARQ (dead-code reset)": TARQ(world.vocab, num_levels=args.levels, codebook_size=args.codebook_size,
                                       initialization="keras"),
        "TARQ (no reset)": TARQ(world.vocab, num_levels=args.levels, codebook_size=args.codebook_size,
                                initialization="keras"),
    }
    if args.quick:
        models.pop("TARQ (no reset)")
    rows, payload = [], {"settings": vars(args), "models": {}}
    oracle_auc = auc(test_y, test_p)
    for name, model in models.items():
        callbacks = [CodebookMonitor(model.quantizer, every=50)] if name == "TARQ (dead-code reset)" else []
        print(f"training {name}", flush=True)
        seconds = train(model, train_f, train_y, args.epochs, 256, callbacks)
        scores = predict(model, test_f)
        result = {"auc": auc(test_y, scores), "recall5_vs_oracle": recall_vs_oracle(test_p, scores),
                  "train_seconds": seconds}
        catalogue = None
        if isinstance(model, TARQ):
            ids = np.arange(world.num_videos)
            item_feats = {"video_id": ids, "author_id": world.author, "category_level_one": world.cat1,
                          "category_level_two": world.cat2, "upload_type": world.upload,
                          **{name: np.ones_like(ids) for name in TIME_FEATURES if name.startswith("upload")}}
            table = model.item_vectors({k: tf.constant(v[None], tf.int64) for k, v in item_feats.items()})[0]
            codes = model.quantizer.encode(table)
            catalogue = (table, codes)
            result["codebook_utilisation"] = codebook_utilisation(codes.numpy()[1:], args.codebook_size).tolist()
        for n in sizes:
            ms = scoring_cost(model, world, n, catalogue)
            result[f"us_per_candidate@{n}"] = ms * 1000.0 / n
        payload["models"][name] = result
        print(name, result, flush=True)
    din = payload["models"]["DIN (full target attention)"]
    for name, r in payload["models"].items():
        rows.append([name, r["auc"], r["auc"] / din["auc"] - 1.0, r["recall5_vs_oracle"]]
                    + [r.get(f"us_per_candidate@{n}") for n in sizes]
                    + [din[f"us_per_candidate@{sizes[-1]}"] / r[f"us_per_candidate@{sizes[-1]}"],
                       ", ".join(f"{u:.0%}" for u in r["codebook_utilisation"]) if "codebook_utilisation" in r else None,
                       r["train_seconds"]])
    table = markdown_table(["model", "test AUC", "vs DIN", "Recall@5 vs oracle"]
                           + [f"µs/candidate N={n}" for n in sizes]
                           + [f"DIN cost / cost (N={sizes[-1]})", "codebook utilisation (per level)", "train s"], rows)
    png = RESULTS_DIR / f"{args.name}.png"
    plot_quality_vs_cost({name: (r[f"us_per_candidate@{sizes[-1]}"], r["auc"], None) for name, r in payload["models"].items()},
                         sizes[-1], "test AUC", "pre-ranking quality vs scoring cost", png)
    markdown = (f"Hand-made requests (target-attention ground truth; oracle AUC {oracle_auc:.4f}), "
                f"{args.train_requests} training / {args.test_requests} test requests × {args.candidates} "
                f"candidates, {args.epochs} epochs, Adam 1e-2, batch 256; TARQ L={args.levels}, C={args.codebook_size}, "
                "d=32. Scoring cost: one request, compiled serving path (TARQ: per-user code-attention cache + "
                "L gathers per candidate from precomputed item vectors and codes), median of 20; 2 shared CPU "
                f"cores, noisy.\n\n{table}\n\n![AUC vs cost]({png.name})\n")
    write_results(args.name, payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
