"""TopKGAT step for step beside the official PyTorch code: same initial weights, same negatives.

The parity benchmark (``bench.topkgat_parity``) compares the two implementations over seeds;
each side draws its own initial weights and negatives, so the gap of two means carries seed
noise. This check removes both sources: it draws one set of initial weights (user and item
embeddings N(0, 0.1²), thresholds B ~ N(0, 1)) and one negative per training row and epoch,
and feeds them to

* the official code (a local clone given by ``--reference``, run by ``--torch-python``; a shim
  loads its ``Model`` with the README settings of the dataset, copies the weights in and
  replaces its negative sampler by the given negatives; the official code is not modified or
  copied);
* the official code again, with the initial weights multiplied by ``1 + 1e-7·N(0, 1)`` (about
  one float32 rounding unit): how fast rounding alone makes two runs of the *same* code drift
  apart;
* ours: ``TopKGAT`` with the CLI's settings for the dataset, ``make_train_step`` and ``AdamW``.

It writes, per epoch, the training loss of the three runs, and at every validation epoch the
relative distance ``‖W_a − W_b‖ / ‖W_b‖`` of the layer-0 weights (user, item and B tables
together) and validation NDCG@20, to ``bench/results/<name>.md/.json/.png``. If ours computed
anything differently (loss, gradient, update, propagation), ours − official would be larger
than the rounding drift from the first epochs on; if the two implementations agree, the
distance ours − official follows the rounding drift.

    .venv/bin/python -m bench.topkgat_lockstep --reference /tmp/TopKGAT \\
        --torch-python /tmp/torchvenv/bin/python --dataset Ali-Display --epochs 300
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import RESULTS_DIR, markdown_table, write_results
from bench.topkgat_parity import DATASETS, _code_dir, _data_root, _reference_commit, run_shim

PERTURBATION = 1e-7

# Trains the official Model from given weights on given negatives (our code; the official code
# runs unmodified). Arguments: code dir, output .npz, input .npz, perturbation, validation
# interval, then the official command line.
SHIM = r'''
import sys
import numpy as np
code_dir, out_path, in_path = sys.argv[1], sys.argv[2], sys.argv[3]
perturbation, every = float(sys.argv[4]), int(sys.argv[5])
sys.argv = [code_dir + "/main.py"] + sys.argv[6:]
sys.path.insert(0, code_dir)
import torch
import parse
parse.args.device = torch.device("cpu")
import model as ref
from dataloader import dataset
given = np.load(in_path)
users, items = dataset.train_user.numpy(), dataset.train_item.numpy()
order = np.lexsort((items, users))
if not np.array_equal(np.stack([users[order], items[order]], 1), given["train"]):
    sys.exit("the official code read other training rows than ours")
m = ref.Model(dataset)
tables = {"user": m.embedding_user.weight, "item": m.embedding_item.weight, "beta": m.TopKformer_beta.weight}
noise = np.random.default_rng(1)
with torch.no_grad():
    for name, weight in tables.items():
        value = given[name].astype(np.float64)
        if perturbation:
            value = value * (1 + perturbation * noise.standard_normal(value.shape))
        weight.copy_(torch.from_numpy(value.astype(np.float32)))
epoch = [0]
def negatives(v):
    j = np.empty(len(order), np.int64)
    j[order] = given["negatives"][epoch[0] - 1]
    return torch.from_numpy(j).to(v.dtype)
m.negative_sampler.negative_sampling = negatives
out = {"loss": []}
for e in range(1, len(given["negatives"]) + 1):
    epoch[0] = e
    out["loss"].append(float(m.train_emb(e)))
    if e % every == 0:
        _, _, ndcg = m.evaluate(dataset.valid_batch, dataset.valid_degree)
        out[f"valid_{e}"] = float(ndcg[-1])
        for name, weight in tables.items():
            out[f"{name}_{e}"] = weight.detach().numpy().copy()
np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
'''


def draw_inputs(data, layers: int, epochs: int, seed: int) -> dict:
    """Initial weights and one negative per training row and epoch, rows sorted by (user, item)."""
    from tfcascade.topkgat.sampler import NegativeSampler

    rng = np.random.default_rng(seed)
    train = data.train[np.lexsort((data.train[:, 1], data.train[:, 0]))].astype(np.int64)
    sampler = NegativeSampler(train, data.num_items, seed=seed)
    return {
        "train": train,
        "user": rng.normal(0.0, 0.1, (data.num_users, 64)).astype(np.float32),
        "item": rng.normal(0.0, 0.1, (data.num_items, 64)).astype(np.float32),
        "beta": rng.normal(0.0, 1.0, (data.num_users, layers)).astype(np.float32),
        "negatives": np.stack([sampler.sample() for _ in range(epochs)]),
    }


def run_ours(data, dataset: str, inputs: dict, every: int) -> dict:
    """Ours from the same weights on the same negatives: the CLI's model, step and optimizer."""
    import tensorflow as tf  # after tfcascade, which picks the Keras that tf.keras binds to

    from tfcascade.topkgat.evaluator import FullRankingEvaluator
    from tfcascade.topkgat.model import TopKGAT
    from tfcascade.topkgat.training import AdamW, TrainConfig, make_train_step, official_settings

    settings, config = official_settings(dataset), TrainConfig()
    train = inputs["train"]
    model = TopKGAT(data.num_users, data.num_items, len(train), num_layers=settings["layers"], edges=train)
    tables = {"user": model.user_embedding, "item": model.item_embedding, "beta": model.beta_logits}
    for name, variable in tables.items():
        variable.assign(inputs[name])
    optimizer = AdamW(model.trainable_variables, lr=settings["lr"], weight_decay=config.weight_decay)
    step = make_train_step(model, optimizer, settings["reg"], config.jit_compile)
    evaluator = FullRankingEvaluator(data.valid, data.train, data.num_users, data.num_items,
                                     config.ks, config.memory_bytes)
    users, items = tf.constant(train[:, 0], tf.int32), tf.constant(train[:, 1], tf.int32)
    out = {"loss": []}
    for epoch, negatives in enumerate(inputs["negatives"], start=1):
        loss, user_x, item_x = step(users, items, tf.constant(negatives))
        out["loss"].append(float(loss))
        if epoch % every == 0:
            out[f"valid_{epoch}"] = evaluator.evaluate(user_x, item_x)["ndcg@20"]
            for name, variable in tables.items():
                out[f"{name}_{epoch}"] = variable.numpy()
    return out


def distance(a: dict, b: dict, epoch: int) -> float:
    """‖W_a − W_b‖ / ‖W_b‖ over the user, item and B tables after ``epoch`` updates."""
    names = ("user", "item", "beta")
    diff = sum(float(np.sum((np.asarray(a[f"{n}_{epoch}"], np.float64) - b[f"{n}_{epoch}"]) ** 2)) for n in names)
    norm = sum(float(np.sum(np.asarray(b[f"{n}_{epoch}"], np.float64) ** 2)) for n in names)
    return float(np.sqrt(diff / norm))


def compare(official: dict, perturbed: dict, ours: dict, every: int) -> tuple[list[dict], str]:
    """Per validation epoch: losses, weight distances and validation NDCG@20 of the three runs."""
    rows, table = [], []
    epochs = len(official["loss"])
    for epoch in range(every, epochs + 1, every):
        loss = {name: float(run["loss"][epoch - 1])
                for name, run in (("official", official), ("perturbed", perturbed), ("ours", ours))}
        row = {"epoch": epoch, "loss": loss,
               "loss_rel_diff": {"ours": abs(loss["ours"] - loss["official"]) / loss["official"],
                                 "perturbed": abs(loss["perturbed"] - loss["official"]) / loss["official"]},
               "weight_distance": {"ours": distance(ours, official, epoch),
                                   "perturbed": distance(perturbed, official, epoch)},
               "valid_ndcg@20": {"official": float(official[f"valid_{epoch}"]),
                                 "perturbed": float(perturbed[f"valid_{epoch}"]),
                                 "ours": float(ours[f"valid_{epoch}"])}}
        rows.append(row)
        table.append([epoch, f"{loss['official']:.6f}", f"{row['loss_rel_diff']['perturbed']:.1e}",
                      f"{row['loss_rel_diff']['ours']:.1e}", f"{row['weight_distance']['perturbed']:.1e}",
                      f"{row['weight_distance']['ours']:.1e}",
                      " / ".join(f"{row['valid_ndcg@20'][k]:.5f}" for k in ("official", "perturbed", "ours"))])
    return rows, markdown_table(
        ["epoch", "official loss", "loss rel. diff, perturbed official", "loss rel. diff, ours",
         "weight distance, perturbed official", "weight distance, ours",
         "valid NDCG@20 official / perturbed / ours"], table)


def plot(rows: list[dict], official: dict, perturbed: dict, ours: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    official_loss = np.asarray(official["loss"])
    epochs = np.arange(1, len(official_loss) + 1)
    for name, run, colour in (("perturbed official (rounding drift)", perturbed, "tab:orange"),
                              ("ours", ours, "tab:blue")):
        rel = np.abs(np.asarray(run["loss"]) - official_loss) / official_loss
        axes[0].semilogy(epochs, np.maximum(rel, 1e-9), color=colour, lw=0.8, label=name)
        key = "ours" if run is ours else "perturbed"
        axes[1].semilogy([r["epoch"] for r in rows], [r["weight_distance"][key] for r in rows], "o-",
                         color=colour, label=name)
    axes[0].set(xlabel="epoch", ylabel="|loss − official loss| / official loss",
                title="training loss, relative to the official run")
    axes[1].set(xlabel="epoch", ylabel="‖W − W_official‖ / ‖W_official‖", title="layer-0 weights")
    for name, colour in (("official", "k"), ("perturbed", "tab:orange"), ("ours", "tab:blue")):
        axes[2].plot([r["epoch"] for r in rows], [r["valid_ndcg@20"][name] for r in rows], "o-",
                     color=colour, ms=3, lw=0.8, label=name)
    axes[2].set(xlabel="epoch", ylabel="valid NDCG@20", title="validation")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True,
                        help="local clone of github.com/StupidThree/TopKGAT (or its code/ folder)")
    parser.add_argument("--reference-commit", default=None,
                        help="commit of the reference code, recorded in the results (default: "
                             "`git rev-parse HEAD` in --reference)")
    parser.add_argument("--torch-python", default="python3", help="interpreter with torch, numpy and pandas")
    parser.add_argument("--dataset", default="Ali-Display", choices=DATASETS)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--every", type=int, default=20, help="validate and compare weights every this many epochs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the negatives")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset folders "
                        "(default: $TFCASCADE_DATA_DIR/topkgat or ../shared/data/topkgat)")
    parser.add_argument("--name", default=None, help="results file name (default: topkgat_lockstep_<dataset>)")
    args = parser.parse_args(argv)
    for name in ("epochs", "every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.every > args.epochs:
        parser.error(f"--every {args.every} is more than --epochs {args.epochs}: nothing to compare")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfcascade.data.interactions import load_interactions
    from tfcascade.topkgat.training import official_settings

    data_dir = _data_root(args.data_root)
    code_dir = _code_dir(Path(args.reference))
    commit = args.reference_commit or _reference_commit(Path(args.reference))
    name = args.name or f"topkgat_lockstep_{args.dataset.lower().replace('-', '_')}"
    data = load_interactions(data_dir / args.dataset)
    settings = official_settings(args.dataset)
    inputs = draw_inputs(data, settings["layers"], args.epochs, args.seed)
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **inputs)
        runs = {}
        for label, perturbation in (("official", 0.0), ("perturbed", PERTURBATION)):
            start = time.perf_counter()
            run_shim(args.torch_python, SHIM, code_dir, data_dir, args.dataset, tmp / f"{label}.npz",
                     [str(tmp / "inputs.npz"), str(perturbation), str(args.every)], [])
            runs[label] = dict(np.load(tmp / f"{label}.npz"))
            timings[label] = time.perf_counter() - start
    start = time.perf_counter()
    runs["ours"] = run_ours(data, args.dataset, inputs, args.every)
    timings["ours"] = time.perf_counter() - start
    rows, table = compare(runs["official"], runs["perturbed"], runs["ours"], args.every)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = RESULTS_DIR / f"{name}.png"
    plot(rows, runs["official"], runs["perturbed"], runs["ours"], png,
         f"TopKGAT on {args.dataset}: same weights and negatives, ours vs official")
    markdown = (
        f"Official code: github.com/StupidThree/TopKGAT (commit {commit or 'unknown'}), `Model` with"
        f" its README settings for {args.dataset} ({settings['layers']} layers, lr {settings['lr']:g},"
        f" λ {settings['reg']:g}), on CPU. Ours: `TopKGAT`, `make_train_step` and `AdamW` with the CLI"
        f" defaults for {args.dataset}. All three runs start from the same initial weights (seed"
        f" {args.seed}) and use the same negatives for {args.epochs} epochs; \"perturbed official\" is the"
        f" official code from the initial weights × (1 + {PERTURBATION:g}·N(0, 1)), the drift that float32"
        " rounding alone produces. Weight distance: ‖W − W_official‖ / ‖W_official‖ over the layer-0"
        " user, item and B tables after the epoch's update; validation NDCG@20 ranks the weights that"
        " epoch's loss used, as both training loops do.\n\n"
        f"{table}\n\n![loss and weight distance against the official run]({png.name})\n")
    loss = {k: [float(x) for x in v["loss"]] for k, v in runs.items()}
    write_results(name, {"reference_commit": commit, "dataset": args.dataset, "epochs": args.epochs,
                         "seed": args.seed, "perturbation": PERTURBATION, "settings": settings,
                         "wall_seconds": timings, "rows": rows, "loss": loss}, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
