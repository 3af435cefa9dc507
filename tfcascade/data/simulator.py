"""A RecFlow-shaped simulator: a production cascade over a hidden ground truth.

Users, items and a hidden relevance model

    rel(u, i) = ⟨p_u, q_i⟩ + β·log-popularity_i + γ·affinity(u, category_i)

drive one simulated production cascade per request: retrieval from the corpus → pre-ranking →
coarse ranking → ranking → re-ranking → shown. Each stage ranks what the previous one kept by
``rel + N(0, σ_stage²)`` (``noise`` gives σ per stage), so later stages are better views of the
truth. The logs are written in the real RecFlow format (``docs/recflow_format.md``,
``tfcascade.data.schema``), so that readers of the real release read them unchanged:

    all_stage/<day>.feather            one row per logged (request, video) with its stage flags
    realshow/<day>.feather             the shown rows with feedback
    request_id_dict/<day>.pkl          request_id -> {stage: int64 [n, 8]}
    seq_effective_50_dict/<day>.pkl    request_id -> int64 [50, 10], oldest first, zero rows padding
    others/id_cnt.pkl                  id feature -> number of distinct ids (ids are 0 .. count - 1)
    ground_truth/                      the hidden model and true relevance (analysis only)

The stage flags follow RecFlow's definitions with the preset's funnel in place of RecFlow's
500: rank_pos / rerank_pos are the top 10 of the rank / rerank stage, rank_neg / rerank_neg
the rest of what entered it, coarse_neg / prerank_neg what the coarse / pre-rank stage
dropped; each flag's negatives are a logged sample of ``samples_per_stage``, and a logged
item carries every flag that holds for it.

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

from tfcascade.data.schema import (
    COLUMNS,
    HISTORY_COLUMNS,
    HISTORY_LENGTH,
    ID_COUNT_KEYS,
    REQUEST_DICT_COLUMNS,
    STAGE_FLAGS,
)

log = logging.getLogger(__name__)
HISTORY = HISTORY_LENGTH
TOP = 10  # rank_pos / rerank_pos: the top 10 of their stage (RecFlow's field table)
DAY0 = pd.Timestamp("2024-01-13")
MS_PER_DAY = 86_400_000
EFFECTIVE_FRACTION = 0.3  # effective_view: watched >= 30 % of the video
AGES, GENDERS, UPLOAD_TYPES = 8, 3, 4


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulation.

    ``stage_sizes`` are how many items each stage of the production cascade keeps:
    (retrieved, pre-ranked, coarse-ranked, ranked, re-ranked, shown). The rank stage orders all
    coarse-ranked items (``rank_index``) and passes its top ``stage_sizes[3]`` to re-ranking,
    which orders them (``rerank_index``); the top ``stage_sizes[5]`` are shown.
    ``samples_per_stage`` is how many of each stage's negatives are logged (RecFlow logs a
    sample, not all of them).
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
        if sizes[3] <= TOP or sizes[5] > TOP:
            raise ValueError(f"stage_sizes[3] must be > {TOP} (re-ranking needs negatives) and stage_sizes[5] "
                             f"<= {TOP} (shown items are rerank_pos), got stage_sizes={sizes}")
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
    """Users, items and the hidden relevance model. Ids are the row numbers (0 .. count − 1)."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator):
        self.cfg = cfg
        d, u, n = cfg.latent_dim, cfg.users, cfg.items
        self.authors = cfg.authors or max(n // 10, 1)
        self.user_vec = rng.normal(0, 1 / np.sqrt(d), (u, d)).astype(np.float32)
        self.item_vec = rng.normal(0, 1, (n, d)).astype(np.float32)
        self.popularity = rng.normal(0, 1, n).astype(np.float32)
        self.cat1 = rng.integers(0, cfg.categories[0], n)
        self.cat2 = self.cat1 * (cfg.categories[1] // cfg.categories[0]) + rng.integers(
            0, max(cfg.categories[1] // cfg.categories[0], 1), n)
        self.author = rng.integers(0, self.authors, n)
        self.upload_type = rng.integers(0, UPLOAD_TYPES, n)
        self.upload_ts = (DAY0 - pd.Timedelta(days=90)).value // 10**9 + rng.integers(0, 86400 * 90, n)  # s
        self.duration = np.round(np.exp(rng.normal(10.4, 0.6, n))).astype(np.int64)  # ms, median ≈ 33 s
        self.affinity = rng.normal(0, 1, (u, cfg.categories[0])).astype(np.float32)
        self.age = rng.integers(0, AGES, u)
        self.gender = rng.integers(0, GENDERS, u)
        self.province = rng.integers(0, cfg.provinces, u)
        self.device = rng.integers(0, cfg.devices, u)

    def relevance(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """rel for users [R] x items [R, m] -> [R, m]."""
        dot = np.einsum("rd,rmd->rm", self.user_vec[users], self.item_vec[items])
        aff = np.take_along_axis(self.affinity[users], self.cat1[items], axis=1)
        return dot + 0.5 * self.popularity[items] + 0.7 * aff

    def id_counts(self) -> dict[str, int]:
        """``others/id_cnt.pkl``: distinct ids per feature."""
        cfg = self.cfg
        counts = {"user_id": cfg.users, "device_id": cfg.devices, "age": AGES, "gender": GENDERS,
                  "province": cfg.provinces, "video_id": cfg.items, "photo_id": cfg.items,
                  "author_id": self.authors, "category_level_one": cfg.categories[0],
                  "category_level_two": cfg.categories[1], "upload_type": UPLOAD_TYPES}
        return {key: int(counts[key]) for key in ID_COUNT_KEYS}


class _History:
    """Each user's effective views, newest first: item, request timestamp (ms), playing time
    (ms) and request id, ``-1`` item = empty slot."""

    def __init__(self, world: _World, rng: np.random.Generator):
        cfg = world.cfg
        users = np.arange(cfg.users)
        sample = rng.integers(0, cfg.items, (cfg.users, 4 * HISTORY))
        rel = world.relevance(users, sample) + rng.normal(0, 1, sample.shape)
        self.item = np.take_along_axis(sample, _rank_by(rel, HISTORY), 1)
        lengths = rng.integers(HISTORY // 2, HISTORY + 1, cfg.users)  # users with < 50 views exist
        self.item[np.arange(HISTORY)[None] >= lengths[:, None]] = -1
        day0_ms = DAY0.value // 10**6
        self.ts = day0_ms - np.sort(rng.integers(1, 7 * MS_PER_DAY, (cfg.users, HISTORY)), axis=1)
        watched = rng.uniform(EFFECTIVE_FRACTION, 1.5, (cfg.users, HISTORY))
        self.playing = np.round(watched * world.duration[np.maximum(self.item, 0)]).astype(np.int64)
        self.request = np.zeros((cfg.users, HISTORY), np.int64)  # views before the logs: request 0

    def add(self, user: int, items: np.ndarray, ts: int, playing: np.ndarray, request_id: int) -> None:
        """Prepends one request's effective views (the newest)."""
        m = len(items)
        for name, new in (("item", items), ("ts", np.full(m, ts)), ("playing", playing),
                          ("request", np.full(m, request_id))):
            old = getattr(self, name)
            old[user] = np.concatenate([new, old[user]])[:HISTORY]

    def sequence(self, world: _World, user: int) -> np.ndarray:
        """``seq_effective_50_dict`` value: int64 [50, 10], oldest first, zero rows first."""
        valid = np.flatnonzero(self.item[user] >= 0)[::-1]  # oldest first
        item = self.item[user][valid]
        columns = {"video_id": item, "author_id": world.author[item], "category_level_two": world.cat2[item],
                   "category_level_one": world.cat1[item], "upload_type": world.upload_type[item],
                   "upload_timestamp": world.upload_ts[item], "duration": world.duration[item],
                   "request_timestamp": self.ts[user][valid], "playing_time": self.playing[user][valid],
                   "request_id": self.request[user][valid]}
        seq = np.zeros((HISTORY, len(HISTORY_COLUMNS)), np.int64)
        if len(valid):
            seq[HISTORY - len(valid):] = np.stack([columns[c] for c in HISTORY_COLUMNS], axis=1)
        return seq


def _rank_by(scores: np.ndarray, keep: int) -> np.ndarray:
    """Column order (best first) of each row's top ``keep`` by score."""
    top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def simulate(out_dir: str | Path, preset: str = "tiny", seed: int = 0, **knobs) -> dict:
    """Simulates ``days`` of cascade logs into ``out_dir`` (the RecFlow format).

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
    history = _History(world, rng)
    stats = {"preset": preset, "seed": seed, "config": dataclasses.asdict(cfg), "requests": 0,
             "stage_samples": 0, "realshow_rows": 0, "days": []}
    next_request = 1
    for day in range(cfg.days):
        date = (DAY0 + pd.Timedelta(days=day)).strftime("%Y-%m-%d")
        rows, shown, req_dict, seqs, truth = _simulate_day(world, history, rng, day, next_request)
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
    _write_pickle(world.id_counts(), out / "others" / "id_cnt.pkl")
    np.savez(out / "ground_truth" / "model.npz", user_vec=world.user_vec, item_vec=world.item_vec,
             popularity=world.popularity, affinity=world.affinity)
    seconds = time.perf_counter() - start
    stats["seconds"] = round(seconds, 3)
    stats["stage_samples_per_minute"] = round(stats["stage_samples"] / max(seconds, 1e-9) * 60)
    (out / "ground_truth" / "simulation.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _simulate_day(world: _World, history: _History, rng: np.random.Generator, day: int, first_request: int):
    cfg = world.cfg
    r, sizes, s = cfg.requests_per_day, cfg.stage_sizes, cfg.samples_per_stage
    users = rng.integers(0, cfg.users, r)
    request_ids = np.arange(first_request, first_request + r, dtype=np.int64)
    ts = (DAY0 + pd.Timedelta(days=day)).value // 10**6 + np.sort(rng.integers(0, MS_PER_DAY, r))
    # Retrieval: a random slice of the corpus, ranked by a noisy view of relevance.
    pool = np.stack([rng.choice(cfg.items, cfg.retrieval_pool, replace=False) for _ in range(r)])
    true_pool = world.relevance(users, pool)
    order = _rank_by(true_pool + rng.normal(0, cfg.noise[0], pool.shape), sizes[0])
    cand = np.take_along_axis(pool, order, 1)  # [r, s0] retrieved items
    true = np.take_along_axis(true_pool, order, 1)
    # Pre-rank and coarse stages keep their top; rank and rerank order all they are given.
    prerank = _rank_by(true + rng.normal(0, cfg.noise[1], true.shape), sizes[1])  # columns into cand
    coarse = _stage(prerank, true, sizes[2], cfg.noise[2], rng)
    ranked = _stage(coarse, true, sizes[2], cfg.noise[3], rng)  # all coarse survivors, rank order
    reranked = _stage(ranked[:, : sizes[3]], true, sizes[3], cfg.noise[4], rng)
    rank_index = _positions(ranked, sizes[0])
    rerank_index = _positions(reranked, sizes[0])
    entered = {"prerank": _members(prerank, sizes[0]), "coarse": _members(coarse, sizes[0])}
    flags = {
        "prerank_neg": ~entered["prerank"],
        "coarse_neg": entered["prerank"] & ~entered["coarse"],
        "rank_pos": (rank_index >= 0) & (rank_index < TOP),
        "rank_neg": rank_index >= TOP,
        "rerank_pos": (rerank_index >= 0) & (rerank_index < TOP),
        "rerank_neg": rerank_index >= TOP,
        "realshow": (rerank_index >= 0) & (rerank_index < sizes[5]),
    }
    # Logged: every top-10 item and a sample of each flag's other items; each logged item
    # carries all of its flags.
    logged = flags["rank_pos"] | flags["rerank_pos"]
    for name in ("prerank_neg", "coarse_neg", "rank_neg", "rerank_neg"):
        logged |= _sample(flags[name], s, rng)
    row_order = np.argsort(np.where(logged, rng.random(logged.shape), np.inf), axis=1, kind="stable")
    counts = logged.sum(1)
    req_rep = np.repeat(np.arange(r), counts)
    cols = np.concatenate([row_order[i, : counts[i]] for i in range(r)])  # logged columns, random order
    items = cand[req_rep, cols]
    item_true = true[req_rep, cols]
    n_rows = len(items)
    shown_flat = flags["realshow"][req_rep, cols]
    watch = item_true + rng.normal(0, 0.5, n_rows)
    # Watched fraction: 30 % at watch = 0.3 (effective view), 100 % at watch = 1.2 (long view).
    fraction = EFFECTIVE_FRACTION * np.exp((watch - 0.3) * np.log(1 / EFFECTIVE_FRACTION) / 0.9)
    playing = np.where(shown_flat, np.round(fraction * world.duration[items]), 0).astype(np.int64)
    effective = shown_flat & (fraction >= EFFECTIVE_FRACTION)
    frame = {
        "request_id": request_ids[req_rep], "user_id": users[req_rep], "request_timestamp": ts[req_rep],
        "device_id": world.device[users][req_rep], "age": world.age[users][req_rep],
        "gender": world.gender[users][req_rep], "province": world.province[users][req_rep],
        "video_id": items, "author_id": world.author[items], "category_level_one": world.cat1[items],
        "category_level_two": world.cat2[items], "upload_type": world.upload_type[items],
        "upload_timestamp": world.upload_ts[items], "duration": world.duration[items],
        **{f: flags[f][req_rep, cols] for f in STAGE_FLAGS},
        "rank_index": rank_index[req_rep, cols], "rerank_index": rerank_index[req_rep, cols],
        "playing_time": playing, "effective_view": effective,
        "long_view": shown_flat & (fraction >= 1.0),
        "like": shown_flat & (watch + rng.normal(0, 0.5, n_rows) > 1.8),
        "follow": shown_flat & (watch + rng.normal(0, 0.5, n_rows) > 2.4),
        "forward": shown_flat & (watch + rng.normal(0, 0.5, n_rows) > 2.6),
        "comment": shown_flat & (watch + rng.normal(0, 0.5, n_rows) > 2.5),
    }
    rows = pd.DataFrame({c: np.asarray(frame[c]).astype(np.int64) for c in COLUMNS})
    shown_rows = rows[rows["realshow"] == 1].reset_index(drop=True)
    truth = pd.DataFrame({"request_id": rows["request_id"], "video_id": rows["video_id"],
                          "true_relevance": item_true.astype(np.float64)})
    bounds = np.concatenate([[0], np.cumsum(counts)])
    dict_values = rows[list(REQUEST_DICT_COLUMNS)].to_numpy(np.int64)
    req_dict: dict[int, dict] = {int(rid): {} for rid in request_ids}
    for flag in STAGE_FLAGS:
        at = np.flatnonzero(rows[flag].to_numpy() == 1)
        if flag in ("rank_pos", "rerank_pos"):  # stage order, as the readers take the first 10
            position = rows["rank_index" if flag == "rank_pos" else "rerank_index"].to_numpy()
            at = at[np.lexsort((position[at], req_rep[at]))]
        per_request = np.split(dict_values[at], np.searchsorted(req_rep[at], np.arange(1, r)))
        for rid, listed in zip(request_ids.tolist(), per_request):
            if len(listed):
                req_dict[rid][flag] = listed
    seqs = {rid: history.sequence(world, users[i]) for i, rid in enumerate(request_ids.tolist())}  # start of day
    # The day's effective views become the newest history entries.
    for i in range(r):
        at = np.flatnonzero(effective[bounds[i]:bounds[i + 1]]) + bounds[i]
        if len(at):
            history.add(users[i], items[at], ts[i], playing[at], int(request_ids[i]))
    return rows, shown_rows, req_dict, seqs, truth


def _stage(survivors: np.ndarray, true: np.ndarray, keep: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The ``keep`` best of ``survivors`` (columns into the retrieved list) by a noisy score, best first."""
    noisy = np.take_along_axis(true, survivors, 1) + rng.normal(0, sigma, survivors.shape)
    return np.take_along_axis(survivors, _rank_by(noisy, keep), 1)


def _positions(order: np.ndarray, width: int) -> np.ndarray:
    """[r, width] position of each column in ``order`` (−1 where absent)."""
    out = np.full((order.shape[0], width), -1, np.int64)
    np.put_along_axis(out, order, np.arange(order.shape[1])[None].repeat(order.shape[0], 0), 1)
    return out


def _members(columns: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((columns.shape[0], width), bool)
    np.put_along_axis(out, columns, True, 1)
    return out


def _sample(candidates: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of up to ``s`` True entries per row of ``candidates``."""
    key = np.where(candidates, rng.random(candidates.shape), np.inf)
    picked = np.zeros_like(candidates)
    first = np.argsort(key, axis=1, kind="stable")[:, :s]
    np.put_along_axis(picked, first, True, 1)
    return picked & candidates


def _write_feather(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    feather.write_feather(table, str(path), compression="zstd")


def _write_pickle(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
