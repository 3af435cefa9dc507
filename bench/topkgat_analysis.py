"""The TopKGAT paper's analyses (arXiv 2601.18432) from tfcascade's implementation: the number of
layers, the ω ablations, and where the learned per-user thresholds cut the ranking per layer.

    .venv/bin/python -m bench.topkgat_analysis                      # Ali-Display, seed 0 (~40 min on 2 cores)
    .venv/bin/python -m bench.topkgat_analysis --layers 1 2 --variants topkgat --epochs 40   # a smoke run
    .venv/bin/python -m bench.topkgat_analysis --resume             # skip the runs already in the results

Every run is one ``tfcascade topkgat`` process with the CLI's defaults (the official settings of
the dataset: learning rate, λ, early stopping on validation NDCG@20 every 20 epochs, patience
200, at most 2,000 epochs), changing only ``--layers`` or ``--variant``:

* **layers** 1–5 of TopKGAT (paper: best at 2–4);
* **ablations** at the dataset's official number of layers: ``softmax`` (ω replaced by a softmax
  over the user's neighbours, the "w/o band-pass" row), ``beta0`` (β = 0, "w/o threshold") and
  ``lightgcn`` (no attention), against ``topkgat``;
* **thresholds** (paper Fig. 3–4): for every user u and layer l, the number of items whose
  cosine similarity to u at the layer's input exceeds the learned β_u^(l)
  (``TopKGAT.threshold_ranks``), i.e. the K of the top-K boundary the threshold stands for; the
  paper's reading is that shallow layers cut high in the ranking and deeper layers lower.

Writes ``bench/results/<name>.md/.json/.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, markdown_table, write_results
from bench.topkgat import DATASETS, run_one
from tfcascade.topkgat import VARIANTS, official_settings

ABLATIONS = ("topkgat", "softmax", "beta0", "lightgcn")


def _key(run: dict) -> tuple:
    return run["dataset"], run["variant"], run["layers"], run["config"]["seed"]


def plot(runs: list[dict], dataset: str, official_layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    sweep = sorted((r for r in runs if r["variant"] == "topkgat"), key=lambda r: r["layers"])
    ax = axes[0]
    for metric in ("recall@20", "ndcg@20"):
        ax.plot([r["layers"] for r in sweep], [r["test"][metric] for r in sweep], "o-", label=f"test {metric}")
    ax.set_xlabel("layers")
    ax.set_title(f"TopKGAT on {dataset}: number of layers")
    ax.legend(fontsize=8)
    ax = axes[1]
    ablation = [r for v in ABLATIONS for r in runs if r["variant"] == v and r["layers"] == official_layers]
    xs = range(len(ablation))
    ax.bar([x - 0.2 for x in xs], [r["test"]["recall@20"] for r in ablation], 0.4, label="test recall@20")
    ax.bar([x + 0.2 for x in xs], [r["test"]["ndcg@20"] for r in ablation], 0.4, label="test ndcg@20")
    ax.set_xticks(list(xs), [r["variant"] for r in ablation])
    ax.set_title(f"ω ablations ({official_layers} layers)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for n, r in enumerate(r for r in sweep if r.get("thresholds")):
        layers = [t["layer"] + 0.04 * (n - 2) for t in r["thresholds"]]  # offset: overlapping lines stay visible
        line, = ax.plot(layers, [t["rank_median"] for t in r["thresholds"]], "o-", label=f"{r['layers']} layers")
        ax.plot(layers, [t["rank_p90"] for t in r["thresholds"]], "x--", color=line.get_color(), alpha=0.6)
    ax.set_yscale("symlog", linthresh=1)
    ticks = [0, 1, 2, 5, 10, 20, 50, 100, 1000, 10000]
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:,}" for t in ticks]))
    ax.set_xlabel("layer")
    ax.set_ylabel("items above β_u: median (o), p90 (x)")
    ax.set_title("where the learned thresholds cut")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(runs: list[dict], dataset: str, official_layers: int, png: str) -> str:
    def row(r):
        return [r["variant"], r["layers"], r["config"]["seed"], r["test"]["recall@20"], r["test"]["ndcg@20"],
                r["test"]["recall@10"], r["test"]["ndcg@10"], r["best_epoch"], r["epochs_run"],
                r["seconds_per_epoch"]]

    head = ["variant", "layers", "seed", "test Recall@20", "test NDCG@20", "test Recall@10", "test NDCG@10",
            "best epoch", "epochs run", "s/epoch"]
    sweep = sorted((r for r in runs if r["variant"] == "topkgat"), key=lambda r: r["layers"])
    ablation = [r for v in ABLATIONS for r in runs if r["variant"] == v and r["layers"] == official_layers]
    lines = [f"# TopKGAT analyses on {dataset} (tfcascade)", "",
             "Every run: `tfcascade topkgat` with the CLI defaults (the dataset's official settings), only "
             "`--layers` / `--variant` changed; test metrics at the best validation epoch. One seed per row: "
             "differences of a few 0.001 are within run-to-run noise.", "",
             "## Number of layers (paper: best at 2–4)", "", markdown_table(head, [row(r) for r in sweep]), "",
             f"## ω ablations at {official_layers} layers (softmax = w/o band-pass, beta0 = w/o threshold)", "",
             markdown_table(head, [row(r) for r in ablation]), "",
             "## Where the learned thresholds cut (paper Fig. 3–4)", "",
             "Per layer: the learned β_u^(l) (mean ± std over users) and the number of items whose cosine "
             "similarity to the user at that layer's input exceeds it (quantiles over users); "
             f"{dataset} has {runs[0].get('num_items', '?')} items.", ""]
    rows = []
    for r in [*sweep, *[a for a in ablation if a["variant"] == "softmax"]]:
        for t in r.get("thresholds") or []:
            rows.append([r["variant"], r["layers"], t["layer"], f"{t['beta_mean']:.3f} ± {t['beta_std']:.3f}",
                         *(f"{t[f'rank_{q}']:,.0f}" for q in ("p10", "p25", "median", "p75", "p90"))])
    lines += [markdown_table(["variant", "layers", "layer", "β", "rank p10", "p25", "median", "p75", "p90"], rows),
              "", f"![layers, ablations and thresholds]({png})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Ali-Display", choices=DATASETS)
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="TopKGAT layer counts")
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=VARIANTS,
                        help="variants at the dataset's official number of layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2000, help="epoch cap per run (the CLI's default)")
    parser.add_argument("--name", default="topkgat_analysis", help="results file name under bench/results/")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the results and skip them")
    args = parser.parse_args(argv)
    official_layers = official_settings(args.dataset)["layers"]
    previous = RESULTS_DIR / f"{args.name}.json"
    runs = json.loads(previous.read_text())["runs"] if args.resume and previous.is_file() else []
    wanted = [("topkgat", n) for n in args.layers] + [(v, official_layers) for v in args.variants]
    for variant, layers in dict.fromkeys(wanted):
        if any(_key(r) == (args.dataset, variant, layers, args.seed) for r in runs):
            continue
        run = run_one(args.dataset, variant, args.epochs, 20, 200, layers, None, seed=args.seed)
        runs.append(run)
        png = f"{args.name}.png"
        plot(runs, args.dataset, official_layers, RESULTS_DIR / png)
        write_results(args.name, {"dataset": args.dataset, "official_layers": official_layers, "runs": runs},
                      render(runs, args.dataset, official_layers, png))
    print((RESULTS_DIR / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
