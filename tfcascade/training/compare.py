"""Train every loss with several seeds and tabulate mean ± std (``tfcascade compare``)."""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Sequence

from tfcascade.losses import registry
from tfcascade.training.trainer import METRICS_FILE, train

log = logging.getLogger(__name__)

# (metrics key, column title); the stage names depend on the cascade depth.
def columns(stages: int, qs: Sequence[int]) -> list[tuple[str, str]]:
    k = 10
    cols = [("joint_recall", f"Joint Recall@{k}@{qs[-1]}")]
    cols += [("ranking_recall", f"ranking Recall@{k}@{qs[-1]}"), ("ranking_ndcg", f"ranking NDCG@{k}")]
    if stages == 3:
        cols += [("prerank_recall", f"pre-ranking Recall@{k}@{qs[1]}"), ("prerank_ndcg", f"pre-ranking NDCG@{k}")]
    cols += [("retrieval_recall", f"retrieval Recall@{k}@{qs[0]}"), ("retrieval_ndcg", f"retrieval NDCG@{k}"),
             ("train_step_ms", "train step (ms)")]
    return cols


def summarise(runs: Sequence[dict], keys: Sequence[str]) -> dict:
    """``{key: {"mean", "std", "runs"}}`` over runs (sample std; 0 for a single run)."""
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        out[key] = {"mean": statistics.fmean(values) if values else None,
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}
    return out


# Settings added after runs were first recorded: a metrics.json without them used these.
SETTING_DEFAULTS = {"sampled_negatives": 0, "negative_draw": "items"}


def finished_run(model_dir: str, **settings) -> dict | None:
    """The metrics of a finished run in ``model_dir`` (its ``metrics.json``), or None.

    A run counts as finished only if its metrics record the same ``settings`` (loss, stages,
    seed, and epochs / batch_size / lr / sampled_negatives / negative_draw where given); a run with other
    settings is an error.
    """
    path = os.path.join(model_dir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        metrics = json.load(fh)
    recorded = {key: metrics.get(key, SETTING_DEFAULTS.get(key)) for key in settings}
    differ = {key: (recorded[key], value) for key, value in settings.items() if recorded[key] != value}
    if differ:
        found = ", ".join(f"{key}={old!r} (expected {new!r})" for key, (old, new) in differ.items())
        raise ValueError(f"{path} was trained with other settings: {found}; use another out_dir or resume=False")
    return metrics


def compare(data_dir: str, out_dir: str, losses: Sequence[str] | str = "all", seeds: int = 5, stages: int = 2,
            resume: bool = True, **train_kwargs) -> dict:
    """Trains ``losses`` × ``seeds`` and writes ``compare.json``, ``compare.md``, ``compare.png``.

    With ``resume`` (the default) a run whose ``runs/<loss>/seed<i>/metrics.json`` already
    exists is read instead of trained again, so an interrupted comparison continues where it
    stopped (and several processes can share one ``out_dir``, e.g. one per loss).

    Returns:
      loss name → ``{"joint_recall": {"mean", "std", "runs"}, ...}`` (also in compare.json).
    """
    names = registry.names() if losses == "all" else list(losses)
    for name in names:
        registry.loss_class(name)  # fail fast on unknown names
    if seeds <= 0:
        raise ValueError(f"seeds must be > 0, got seeds={seeds}")
    qs = (30, 20) if stages == 2 else (40, 30, 20)
    keys = [key for key, _ in columns(stages, qs)]
    table = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            model_dir = os.path.join(out_dir, "runs", name, f"seed{seed}")
            settings = {key: train_kwargs[key] for key in ("epochs", "batch_size", "lr", "sampled_negatives", "negative_draw")
                        if key in train_kwargs}
            done = finished_run(model_dir, loss=name, stages=stages, seed=seed, **settings) if resume else None
            if done is not None:
                log.info("compare: %s seed %d already finished in %s", name, seed, model_dir)
                runs.append(done)
                continue
            log.info("compare: %s seed %d", name, seed)
            runs.append(train(data_dir, model_dir, loss=name, stages=stages, seed=seed, **train_kwargs))
        table[name] = summarise(runs, keys)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump(table, fh, indent=2)
    with open(os.path.join(out_dir, "compare.md"), "w") as fh:
        fh.write(markdown(table, stages, qs, seeds) + "\n")
    plot(table, os.path.join(out_dir, "compare.png"), f"{stages}-stage cascade, {seeds} seeds")
    return table


def markdown(table: dict, stages: int, qs: Sequence[int], seeds: int) -> str:
    cols = columns(stages, qs)
    lines = ["| loss | " + " | ".join(title for _, title in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, stats in sorted(table.items(), key=lambda kv: -(kv[1]["joint_recall"]["mean"] or 0)):
        cells = []
        for key, _ in cols:
            s = stats[key]
            if s["mean"] is None:
                cells.append("—")
            elif key == "train_step_ms":
                cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}")
            else:
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(table, key=lambda n: -(table[n]["joint_recall"]["mean"] or 0))
    means = [table[n]["joint_recall"]["mean"] for n in names]
    stds = [table[n]["joint_recall"]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, means, yerr=stds, capsize=3, color="tab:blue")
    ax.set_ylabel("Joint Recall@10@q_T (mean ± std)")
    ax.set_title(title)
    ax.set_ylim(min(means) * 0.95 if means else 0, max(means) * 1.02 if means else 1)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
