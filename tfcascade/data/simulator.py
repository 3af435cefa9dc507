"""A RecFlow-shaped simulator: a production cascade over a hidden ground truth.

Users, items and a hidden relevance model

    rel(u, i) = ⟨p_u, q_i⟩ + β·log-popularity_i + γ·affinity(u, category_i)

drive one simulated production cascade per request: retrieval from the corpus → pre-ranking →
coarse ranking → ranking → re-ranking → shown. Each stage ranks what the previous one kept by
``rel + N(0, σ_stage²)`` (``noise`` gives σ per stage), so later stages are better views of the
truth. The logs are written in RecFlow's layout (REFERENCES.md section 5):

    all_stage/<day>.feather            one row per logged (request, item) with stage flags
    realshow/<day>.feather             the shown rows with feedback
    request_id_dict/<day>.pkl          request_id -> {stage: [video_id, ...]}
    seq_effective_50_dict/<day>.pkl    request_id -> {"video_id": [...50], "author_id": [...50]}
    others/id_cnt.pkl                  id feature -> number of distinct ids
    ground_truth/                      the hidden model and true relevance (analysis only)

Everything is vectorised numpy, seeded, and written deterministically (same seed → same bytes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from tfcascade.data.schema import COLUMNS, STAGE_FLAGS

log = logging.getLogger(__name__)
HISTORY = 50
DAY0 = pd.Timestamp("2024-01-13")


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulation.

    ``stage_sizes`` are how many items each stage of the production cascade keeps:
    (retrieved, pre-ranked, coarse-ranked, ranked, re-ranked, shown). ``samples_per_stage`` is
    how many of each stage's negatives are logged (RecFlow logs a sample, not all of them).
    """

    users: int = 200
    items: int = 2000
    days: int = 3
    requests_per_day: int = 100
    latent_dim: int = 16
    stage_sizes: tuple[int, ...] = (200, 100, 60, 24, 12, 6)
    samples_per_stage: int = 10
    noise: tuple[float, ...] = (1.5, 1.0, 0.8, 0.5, 0.3)  # retrieval, prerank, coarse, rank, rerank
    retrieval_pool: int = 600
    authors: int = 0  # 0 = items // 10
    categories: tuple[int, int] = (20, 120)
    provinces: int = 30
    devices: int = 50

    def __post_init__(self):
        for name in ("users", "items", "days", "requests_per_day", "latent_dim", "samples_per_stage",
                     "retrieval_pool"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)}")
        sizes = self.stage_sizes
        if len(sizes) != 6 or any(a <= b for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"stage_sizes must be 6 strictly decreasing counts, got stage_sizes={sizes}")
        if self.retrieval_pool < sizes[0] or self.items < self.retrieval_pool:
            raise ValueError(
                f"need stage_sizes[0]={sizes[0]} <= retrieval_pool={self.retrieval_pool} <= items={self.items}")
        if len(self.noise) != 5 or any(s < 0 for s in self.noise):
            raise ValueError(f"noise must be 5 non-negative levels, got noise={self.noise}")


PRESETS = {
    "tiny": SimulatorConfig(),
    "small": SimulatorConfig(users=2000, items=20000, days=8, requests_per_day=2000),
    "medium": SimulatorConfig(users=20000, items=200000, days=10, requests_per_day=16000),
}


def config_for(preset: str = "tiny", **knobs) -> SimulatorConfig:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got preset={preset!r}")
    knobs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in knobs.items() if v is not None}
    unknown = set(knobs) - {f.name for f in dataclasses.fields(SimulatorConfig)}
    if unknown:
        raise ValueError(f"unknown simulator knobs {sorted(unknown)}")
    return dataclasses.replace(PRESETS[preset], **knobs)


class _World:
    """Users, items and the hidden relevance model."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator):
        self.cfg = cfg
        d, u, n = cfg.latent_dim, cfg.users, cfg.items
        authors = cfg.authors or max(n // 10, 1)
        self.user_vec = rng.normal(0, 1 / np.sqrt(d), (u, d)).astype(np.float32)
        self.item_vec = rng.normal(0, 1, (n, d)).astype(np.float32)
        self.popularity = rng.normal(0, 1, n).astype(np.float32)
        self.cat1 = rng.integers(0, cfg.categories[0], n)
        self.cat2 = self.cat1 * (cfg.categories[1] // cfg.categories[0]) + rng.integers(
            0, max(cfg.categories[1] // cfg.categories[0], 1), n)
        self.author = rng.integers(0, authors, n)
        self.upload_type = rng.integers(0, 4, n)
        self.upload_ts = (DAY0 - pd.Timedelta(days=30)).value // 10**9 + rng.integers(0, 86400 * 60, n)
        self.affinity = rng.normal(0, 1, (u, cfg.categories[0])).astype(np.float32)
        self.age = rng.integers(0, 8, u)
        self.gender = rng.integers(0, 3, u)
        self.province = rng.integers(0, cfg.provinces, u)
        self.device = rng.integers(0, cfg.devices, u)
        # Raw ids look like production ids (sparse, large), not 0..n-1.
        self.video_ids = rng.choice(10**9, n, replace=False).astype(np.int64) + 10**9
        self.user_ids = rng.choice(10**8, u, replace=False).astype(np.int64) + 10**8
        self.author_ids = rng.choice(10**8, authors, replace=False).astype(np.int64) + 10**8

    def relevance(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """rel for users [R] x items [R, m] -> [R, m]."""
        dot = np.einsum("rd,rmd->rm", self.user_vec[users], self.item_vec[items])
        aff = np.take_along_axis(self.affinity[users], self.cat1[items], axis=1)
        return dot + 0.5 * self.popularity[items] + 0.7 * aff


def _rank_by(scores: np.ndarray, keep: int) -> np.ndarray:
    """Column order (best first) of each row's top ``keep`` by score."""
    top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def simulate(out_dir: str | Path, preset: str = "tiny", seed: int = 0, **knobs) -> dict:
    """Simulates ``days`` of cascade logs into ``out_dir`` (RecFlow layout).

    Args:
      out_dir: folder to write (created; existing files of the same days are replaced).
      preset: ``tiny``, ``small`` or ``medium``; ``knobs`` override its fields
        (see :class:`SimulatorConfig`).
      seed: the random seed; the same seed gives byte-identical files.

    Returns:
      Stats: rows written per file kind, requests, seconds and stage samples per minute.
    """
    cfg = config_for(preset, **knobs)
    out = Path(out_dir)
    for sub in ("all_stage", "realshow", "request_id_dict", "seq_effective_50_dict", "others", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _World(cfg, rng)
    start = time.perf_counter()
    history = _initial_history(world, rng)
    stats = {"preset": preset, "seed": seed, "config": dataclasses.asdict(cfg), "requests": 0,
             "stage_samples": 0, "realshow_rows": 0, "days": []}
    next_request = 1
    for day in range(cfg.days):
        date = (DAY0 + pd.Timedelta(days=day)).strftime("%Y-%m-%d")
        rows, shown, req_dict, seqs, truth, history = _simulate_day(
            world, history, rng, day, next_request)
        next_request += cfg.requests_per_day
        _write_feather(rows, out / "all_stage" / f"{date}.feather")
        _write_feather(shown, out / "realshow" / f"{date}.feather")
        _write_pickle(req_dict, out / "request_id_dict" / f"{date}.pkl")
        _write_pickle(seqs, out / "seq_effective_50_dict" / f"{date}.pkl")
        _write_feather(truth, out / "ground_truth" / f"{date}.feather")
        stats["requests"] += cfg.requests_per_day
        stats["stage_samples"] += len(rows)
        stats["realshow_rows"] += len(shown)
        stats["days"].append(date)
        log.info("simulated %s: %d requests, %d stage samples", date, cfg.requests_per_day, len(rows))
    _write_pickle({"user_id": cfg.users, "video_id": cfg.items, "author_id": len(world.author_ids),
                   "category_level_one": cfg.categories[0], "category_level_two": cfg.categories[1],
                   "province": cfg.provinces, "device_id": cfg.devices},
                  out / "others" / "id_cnt.pkl")
    np.savez(out / "ground_truth" / "model.npz", user_vec=world.user_vec, item_vec=world.item_vec,
             popularity=world.popularity, affinity=world.affinity, video_id=world.video_ids,
             user_id=world.user_ids)
    seconds = time.perf_counter() - start
    stats["seconds"] = round(seconds, 3)
    stats["stage_samples_per_minute"] = round(stats["stage_samples"] / max(seconds, 1e-9) * 60)
    (out / "ground_truth" / "simulation.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _initial_history(world: _World, rng: np.random.Generator) -> np.ndarray:
    """Each user's last 50 effective views before day 0: best of a random sample by true rel."""
    cfg = world.cfg
    users = np.arange(cfg.users)
    sample = rng.integers(0, cfg.items, (cfg.users, 4 * HISTORY))
    rel = world.relevance(users, sample) + rng.normal(0, 1, sample.shape)
    return np.take_along_axis(sample, _rank_by(rel, HISTORY), 1)  # [U, 50] item indices, newest first


def _simulate_day(world, history, rng, day, first_request):
    cfg = world.cfg
    r = cfg.requests_per_day
    users = rng.integers(0, cfg.users, r)
    request_ids = np.arange(first_request, first_request + r, dtype=np.int64)
    ts = (DAY0 + pd.Timedelta(days=day)).value // 10**9 + np.sort(rng.integers(0, 86400, r))
    # Retrieval: a random slice of the corpus, ranked by a noisy view of relevance.
    pool = np.stack([rng.choice(cfg.items, cfg.retrieval_pool, replace=False) for _ in range(r)])
    true_pool = world.relevance(users, pool)
    sizes = cfg.stage_sizes
    order = _rank_by(true_pool + rng.normal(0, cfg.noise[0], pool.shape), sizes[0])
    cand = np.take_along_axis(pool, order, 1)  # [r, 200] retrieved
    true = np.take_along_axis(true_pool, order, 1)
    # Successive stages keep their top by their own noisy score; positions are stage ranks.
    kept = np.arange(sizes[0])[None].repeat(r, 0)  # columns into cand, current survivors
    stage_members = {}
    for stage, (keep, sigma) in enumerate(zip(sizes[1:5], cfg.noise[1:])):
        noisy = np.take_along_axis(true, kept, 1) + rng.normal(0, sigma, kept.shape)
        order = _rank_by(noisy, keep)
        survivors = np.take_along_axis(kept, order, 1)
        dropped_mask = np.ones(kept.shape, bool)
        np.put_along_axis(dropped_mask, order, False, 1)
        stage_members[stage] = (survivors, kept[dropped_mask].reshape(r, -1))
        kept = survivors
    (after_prerank, prerank_neg) = stage_members[0]
    (after_coarse, coarse_neg) = stage_members[1]
    (ranked, rank_neg) = stage_members[2]  # ranked: best first → rank_index
    (reranked, _) = stage_members[3]
    shown = reranked[:, : sizes[5]]
    s = cfg.samples_per_stage
    logged = {
        "prerank_neg": _sample_cols(prerank_neg, s, rng),
        "coarse_neg": _sample_cols(coarse_neg, s, rng),
        "rank_neg": _sample_cols(rank_neg, s, rng),
        "rank_pos": ranked,
    }
    rank_index = np.full((r, sizes[0]), -1)
    np.put_along_axis(rank_index, ranked, np.arange(ranked.shape[1])[None].repeat(r, 0), 1)
    rerank_index = np.full((r, sizes[0]), -1)
    np.put_along_axis(rerank_index, reranked, np.arange(reranked.shape[1])[None].repeat(r, 0), 1)
    is_rerank_pos = rerank_index >= 0
    is_shown = np.zeros((r, sizes[0]), bool)
    np.put_along_axis(is_shown, shown, True, 1)

    cols = np.concatenate(list(logged.values()), axis=1)  # [r, m] columns into cand
    flags = {f: np.zeros(cols.shape, np.int8) for f in STAGE_FLAGS}
    start = 0
    for name, block in logged.items():
        flags[name][:, start:start + block.shape[1]] = 1
        start += block.shape[1]
    rank_pos_part = slice(cols.shape[1] - ranked.shape[1], None)
    flags["rerank_pos"][:, rank_pos_part] = np.take_along_axis(is_rerank_pos, ranked, 1)
    flags["rerank_neg"][:, rank_pos_part] = ~np.take_along_axis(is_rerank_pos, ranked, 1)
    flags["realshow"][:, rank_pos_part] = np.take_along_axis(is_shown, ranked, 1)

    items = np.take_along_axis(cand, cols, 1)
    item_true = np.take_along_axis(true, cols, 1)
    m = cols.shape[1]
    req_rep = np.repeat(np.arange(r), m)
    flat_items = items.reshape(-1)
    watch = item_true.reshape(-1) + rng.normal(0, 0.5, r * m)
    shown_flat = flags["realshow"].reshape(-1).astype(bool)
    effective = shown_flat & (watch > 0.3)
    frame = {
        "request_id": request_ids[req_rep], "user_id": world.user_ids[users][req_rep],
        "request_timestamp": ts[req_rep], "device_id": world.device[users][req_rep],
        "age": world.age[users][req_rep], "gender": world.gender[users][req_rep],
        "province": world.province[users][req_rep],
        "video_id": world.video_ids[flat_items], "author_id": world.author_ids[world.author[flat_items]],
        "category_level_one": world.cat1[flat_items], "category_level_two": world.cat2[flat_items],
        "upload_type": world.upload_type[flat_items], "upload_timestamp": world.upload_ts[flat_items],
        **{f: v.reshape(-1) for f, v in flags.items()},
        "rank_index": np.take_along_axis(rank_index, cols, 1).reshape(-1),
        "rerank_index": np.take_along_axis(rerank_index, cols, 1).reshape(-1),
        "playing_time": np.where(shown_flat, np.round(np.exp(watch) * 10.0, 2), 0.0),
        "effective_view": effective.astype(np.int8),
        "long_view": (shown_flat & (watch > 1.2)).astype(np.int8),
        "like": (shown_flat & (watch + rng.normal(0, 0.5, r * m) > 1.8)).astype(np.int8),
        "follow": (shown_flat & (watch + rng.normal(0, 0.5, r * m) > 2.4)).astype(np.int8),
        "forward": (shown_flat & (watch + rng.normal(0, 0.5, r * m) > 2.6)).astype(np.int8),
        "comment": (shown_flat & (watch + rng.normal(0, 0.5, r * m) > 2.5)).astype(np.int8),
    }
    rows = pd.DataFrame({c: np.asarray(frame[c]).astype(np.float64 if k == "f" else np.int64)
                         for c, k in COLUMNS.items()})
    shown_rows = rows[rows["realshow"] == 1].reset_index(drop=True)
    truth = pd.DataFrame({"request_id": rows["request_id"], "video_id": rows["video_id"],
                          "true_relevance": item_true.reshape(-1).astype(np.float64)})
    # request_id -> stage -> video ids; request_id -> history (as of the request: start of day).
    req_dict = {}
    seqs = {}
    hist_items = history[users]  # [r, 50]
    for i, rid in enumerate(request_ids.tolist()):
        req_dict[rid] = {name: world.video_ids[cand[i, block[i]]].tolist() for name, block in logged.items()}
        req_dict[rid]["realshow"] = world.video_ids[cand[i, shown[i]]].tolist()
        seqs[rid] = {"video_id": world.video_ids[hist_items[i]].tolist(),
                     "author_id": world.author_ids[world.author[hist_items[i]]].tolist()}
    # Effective views of the day become the newest history entries.
    eff = effective.reshape(r, m)
    for i in np.flatnonzero(eff.any(1)):
        new = items[i][eff[i]]
        u = users[i]
        history[u] = np.concatenate([new, history[u]])[:HISTORY]
    return rows, shown_rows, req_dict, seqs, truth, history


def _sample_cols(block: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    s = min(s, block.shape[1])
    pick = np.argsort(rng.random(block.shape), axis=1)[:, :s]
    return np.take_along_axis(block, pick, 1)


def _write_feather(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    feather.write_feather(table, str(path), compression="zstd")


def _write_pickle(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
