"""TARQ vs an MLP pre-ranker vs full DIN as the pre-ranking stage of a simulated 3-stage cascade.

    python -m bench.tarq_simulator [--quick] [--seeds 3] [--loss dftopk] [--work DIR]

Three cascades DSSM → {MLP, TARQ, DIN} → DIN are trained with the same cascade loss on the
simulator's ``small`` preset (``tiny`` with --quick), each with several seeds. Per pre-ranking
model: the pre-ranking stage's GAUC (per-request AUC of the ground-truth top-10 against the
rest of the request, on the eval split with its 160 sampled negatives), its Recall@10@30 and
NDCG@10, the cascade's Joint Recall@10@20, the scoring cost of the pre-ranking stage in
microseconds per candidate for one request of N = 1,000 and 10,000 candidates (compiled serving
path; TARQ: the per-user code-attention cache plus L gathers per candidate from item vectors
and codes precomputed offline), and TARQ's codebook utilisation (per level, over every
candidate item of the eval split). Writes ``tarq_simulator.md``, ``.json`` and ``.png``.
"""

# ruff: noqa: I001  (tfcascade is imported before tensorflow: it sets TF_USE_LEGACY_KERAS)
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import tfcascade  # noqa: F401
import tensorflow as tf

from bench.cascade import eval_arrays, prepare, tiled_batch
from bench.common import RESULTS_DIR, markdown_table, plot_quality_vs_cost, serving_ms, write_results
from tfcascade.features import ITEM_FEATURES
from tfcascade.metrics.functions import gauc
from tfcascade.layers.residual_quantizer import codebook_utilisation
from tfcascade.models.tarq import TARQ
from tfcascade.training.compare import finished_run, summarise
from tfcascade.training.trainer import load_model, train

PRERANKERS = {"mlp": "MLP pre-ranker", "tarq": "TARQ", "din": "DIN (full target attention)"}
PRERANK = 1  # index of the pre-ranking stage in a 3-stage cascade


def utilisation(stage: TARQ, items: dict) -> list[float]:
    """Fraction of each level's codes used by the distinct candidate items (``items``: ``[R, n]``)."""
    unique = np.unique(np.stack([items[name].reshape(-1) for name in ITEM_FEATURES], 1), axis=0)
    unique = unique[unique[:, 0] > 0]
    feats = {name: tf.constant(unique[None, :, i]) for i, name in enumerate(ITEM_FEATURES)}
    codes = stage.quantizer.encode(stage.item_vectors(feats)[0]).numpy()
    return codebook_utilisation(codes, stage.codebook_size).tolist()


def scoring_ms(stage, data: Path, n: int) -> float:
    """Median ms to score one request of ``n`` candidates with the stage's serving path."""
    features = tiled_batch(data, 1, n)
    catalogue = None
    if isinstance(stage, TARQ):
        table = stage.item_vectors(features)[0]  # precomputed offline for the catalogue
        catalogue = (table, stage.quantizer.encode(table), tf.range(n)[None])
    return serving_ms(stage, features, catalogue)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 seed, N=1000 only")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--loss", default="dftopk")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temp folder)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    preset = "tiny" if args.quick else "small"
    seeds = 1 if args.quick else args.seeds
    sizes = (1000,) if args.quick else (1000, 10000)
    work = Path(args.work or tempfile.mkdtemp(prefix="tfcascade-tarq-"))
    data = prepare(preset, 3, work)
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-2}
    results: dict = {}
    for kind, title in PRERANKERS.items():
        runs = []
        for seed in range(seeds):
            model_dir = str(work / "runs" / args.loss / kind / f"seed{seed}")
            metrics = finished_run(model_dir, loss=args.loss, stages=3, seed=seed, **settings) or train(
                str(data), model_dir, loss=args.loss, stages=3, seed=seed, stage_models=("dssm", kind, "din"),
                verbose=2, **settings)
            model = load_model(model_dir)
            ev = eval_arrays(model, data)
            run = {"gauc": gauc(ev["label"], ev["scores"][:, PRERANK], model.k, mask=ev["mask"]),
                   "joint_recall": metrics["joint_recall"],
                   "prerank_recall": metrics["prerank_recall"], "prerank_ndcg": metrics["prerank_ndcg"],
                   "train_seconds": metrics["train_seconds"]}
            stage = model.stage_models[PRERANK]
            if isinstance(stage, TARQ):
                run["codebook_utilisation"] = utilisation(stage, ev)
            if seed == 0:
                run.update({f"us_per_candidate@{n}": scoring_ms(stage, data, n) * 1000.0 / n for n in sizes})
            runs.append(run)
            print(title, seed, run, flush=True)
        results[kind] = summarise(runs, ("gauc", "joint_recall", "prerank_recall", "prerank_ndcg", "train_seconds"))
        results[kind].update({key: value for key, value in runs[0].items() if key.startswith("us_per")})
        if "codebook_utilisation" in runs[0]:
            results[kind]["codebook_utilisation"] = np.mean([r["codebook_utilisation"] for r in runs], 0).tolist()
    din = results["din"]
    rows = []
    for kind, title in PRERANKERS.items():
        r = results[kind]
        rows.append([title] + [f"{r[key]['mean']:.4f} ± {r[key]['std']:.4f}"
                               for key in ("gauc", "prerank_recall", "prerank_ndcg", "joint_recall")]
                    + [r["gauc"]["mean"] / din["gauc"]["mean"] - 1.0,
                       r["joint_recall"]["mean"] / din["joint_recall"]["mean"] - 1.0]
                    + [r[f"us_per_candidate@{n}"] for n in sizes]
                    + [din[f"us_per_candidate@{sizes[-1]}"] / r[f"us_per_candidate@{sizes[-1]}"],
                       ", ".join(f"{u:.0%}" for u in r.get("codebook_utilisation", [])) or None,
                       r["train_seconds"]["mean"]])
    table = markdown_table(["pre-ranking stage", "GAUC", "Recall@10@30", "NDCG@10", "Joint Recall@10@20",
                            "GAUC vs DIN", "joint recall vs DIN"]
                           + [f"µs/candidate N={n}" for n in sizes]
                           + [f"DIN cost / cost (N={sizes[-1]})", "codebook utilisation (per level)", "train s"],
                           rows)
    tarq = results["tarq"]
    quality = min(tarq["gauc"]["mean"] / din["gauc"]["mean"], tarq["joint_recall"]["mean"] / din["joint_recall"]["mean"])
    speedup = din[f"us_per_candidate@{sizes[-1]}"] / tarq[f"us_per_candidate@{sizes[-1]}"]
    met = quality >= 0.99 and speedup >= 5.0
    name = "tarq_simulator_quick" if args.quick else "tarq_simulator"
    png = Path(args.out) / f"{name}.png"
    plot_quality_vs_cost({title: (results[kind][f"us_per_candidate@{sizes[-1]}"], results[kind]["gauc"]["mean"],
                                  results[kind]["gauc"]["std"]) for kind, title in PRERANKERS.items()},
                         sizes[-1], "pre-ranking GAUC", "simulated cascade: pre-ranking quality vs cost", png)
    md = (f"Simulator `{preset}` preset, 3-stage cascade DSSM → pre-ranker → DIN, loss `{args.loss}`, {seeds} seeds "
          f"(mean ± std), {args.epochs} epoch(s), batch {args.batch_size}, Adam 1e-2. Scoring cost: one request, "
          f"compiled serving path of the pre-ranking stage, median of 20 (seed 0).\n\n{table}\n\n"
          f"Goal: TARQ within 1% of DIN's quality (worst of GAUC and joint recall: {quality - 1.0:+.2%}) at ≥ 5× lower "
          f"scoring cost ({speedup:.1f}× at N={sizes[-1]}): {'met' if met else 'NOT met'}.\n\n![quality vs cost]({png.name})\n")
    write_results(name, {"settings": vars(args), "preset": preset, "seeds": seeds, "models": results,
                         "goal_met": met}, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
