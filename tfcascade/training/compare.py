"""Train every loss with several seeds and tabulate mean ± std (``tfcascade compare``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
from collections.abc import Sequence

from tfcascade.losses import registry
from tfcascade.models.spec import CascadeSpec
from tfcascade.training.config import RECORDED_BEFORE_OPTION, TrainConfig, resolve
from tfcascade.training.run_state import run_identity
from tfcascade.training.trainer import METRICS_FILE, train

log = logging.getLogger(__name__)


def columns(spec: CascadeSpec) -> list[tuple[str, str]]:
    """``(metrics key, column title)`` of the table: joint recall, each stage from the last to
    the first (recall at its q, NDCG), the train-step time."""
    cols = [("joint_recall", f"Joint Recall@{spec.k}@{spec.qs[-1]}")]
    for name, q in reversed(list(zip(spec.stage_names, spec.qs))):
        cols += [(f"{name}_recall", f"{name} Recall@{spec.k}@{q}"), (f"{name}_ndcg", f"{name} NDCG@{spec.k}")]
    return cols + [("train_step_ms", "train step (ms)")]


def summarise(runs: Sequence[dict], keys: Sequence[str]) -> dict:
    """``{key: {"mean", "std", "runs"}}`` over runs (sample std; 0 for a single run)."""
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        out[key] = {"mean": statistics.fmean(values) if values else None,
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}
    return out


def finished_run(model_dir: str, **settings) -> dict | None:
    """The metrics of a finished run in ``model_dir`` (its ``metrics.json``), or None.

    A run counts as finished only if its metrics record the same ``settings`` (any keys of
    ``metrics.json``: the ``TrainConfig`` options, the ``CascadeSpec`` fields, ``stages``); a run
    with other settings is an error. A setting a metrics.json of an older version lacks is
    taken to have had its default (the spec's by its ``stages``; ``stage_kinds`` were
    ``stage_models``), or what runs before that option were trained with
    (``config.RECORDED_BEFORE_OPTION``: Keras' Adam ε).
    """
    path = os.path.join(model_dir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        metrics = json.load(fh)
    defaults = {**TrainConfig().to_dict(), **RECORDED_BEFORE_OPTION,
                **CascadeSpec.default(int(metrics.get("stages", 2))).get_config()}
    if "stage_models" in metrics:
        defaults["stage_kinds"] = metrics["stage_models"]
    recorded = {key: metrics.get(key, defaults.get(key)) for key in settings}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as in metrics.json
    differ = {key: (recorded[key], value) for key, value in settings.items() if recorded[key] != value}
    if differ:
        found = ", ".join(f"{key}={old!r} (expected {new!r})" for key, (old, new) in differ.items())
        raise ValueError(f"{path} was trained with other settings: {found}; use another out_dir or resume=False")
    return metrics


def compare(data_dir: str, out_dir: str, losses: Sequence[str] | str = "all", seeds: int = 5,
            config: TrainConfig | None = None, spec: CascadeSpec | None = None, resume: bool = True,
            verbose: int | str = "auto", **options) -> dict:
    """Trains ``losses`` × ``seeds`` and writes ``compare.json``, ``compare.md``, ``compare.png``.

    Every run trains ``spec`` with ``config``, its ``loss`` and ``seed`` replaced by the run's.
    With ``resume`` (the default) a run whose ``runs/<loss>/seed<i>/metrics.json`` already
    exists with the same settings is read instead of trained again, so an interrupted
    comparison continues where it stopped (and several processes can share one ``out_dir``,
    e.g. one per loss).

    Args:
      data_dir, out_dir: the preprocessing output; where the runs and tables go.
      losses: loss names, or ``"all"`` (``tfcascade.losses.names()``).
      seeds: runs per loss, seeded 0 … seeds − 1.
      config, spec, **options: as in :func:`training.train` (``options`` is its keyword form).
      resume: read finished runs instead of training them again.
      verbose: Keras' ``fit`` verbosity.

    Returns:
      loss name → ``{"joint_recall": {"mean", "std", "runs"}, ...}`` (also in compare.json).
    """
    config, spec = resolve(config, spec, **options)
    names = registry.names() if losses == "all" else list(losses)
    for name in names:
        registry.loss_class(name)  # fail fast on unknown names
    if seeds <= 0:
        raise ValueError(f"seeds must be > 0, got seeds={seeds}")
    keys = [key for key, _ in columns(spec)]
    table = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            model_dir = os.path.join(out_dir, "runs", name, f"seed{seed}")
            run_config = dataclasses.replace(config, loss=name, seed=seed)
            settings = {key: value for key, value in run_identity(run_config, spec, None).items()
                        if key != "data_fingerprint"}
            done = finished_run(model_dir, stages=spec.num_stages, **settings) if resume else None
            if done is not None:
                log.info("compare: %s seed %d already finished in %s", name, seed, model_dir)
                runs.append(done)
                continue
            log.info("compare: %s seed %d", name, seed)
            runs.append(train(data_dir, model_dir, run_config, spec, verbose=verbose))
        table[name] = summarise(runs, keys)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump(table, fh, indent=2)
    with open(os.path.join(out_dir, "compare.md"), "w") as fh:
        fh.write(markdown(table, spec, seeds=seeds) + "\n")
    plot(table, os.path.join(out_dir, "compare.png"), f"{spec.num_stages}-stage cascade, {seeds} seeds")
    return table


def markdown(table: dict, spec: CascadeSpec | int, qs: Sequence[int] | None = None, seeds: int = 1) -> str:
    """The table as Markdown, best joint recall first.

    Args:
      table: what :func:`compare` returns.
      spec: the compared cascade; or (the older form) its number of stages, with ``qs``, for
        ``CascadeSpec.default(stages, qs=qs)``.
      seeds: runs per loss (unused in the table; kept for the older form's position).
    """
    if not isinstance(spec, CascadeSpec):
        spec = CascadeSpec.default(spec, qs=qs)
    cols = columns(spec)
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
