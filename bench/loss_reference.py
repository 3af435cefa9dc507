"""Every cascade loss against the official implementation's own loss functions: value and gradient.

    python -m bench.loss_reference --reference PATH [--dftopk-reference PATH] [--torch-python PY]

PATH is a local clone of kwai/LCRON (the user clones it; the project never vendors or downloads
it); ``--dftopk-reference`` one of zhangzhen97/DFTOPK. The official loss functions run in a
PyTorch interpreter (``--torch-python``, default ``python3``; ``pip install torch==2.13.0``, the
CPU build) on the same inputs as ours: random logits for a batch of requests laid out as the
reference's data loader lays them out (10 slots per stage sample, full lists), labels in its
encoding (``30 − rank_index`` / ``30 − rerank_index`` for the ground truth, 8 / 7 / 6 / 5 for
the negative samples). Per loss and number of stages it reports the relative difference of the
values and, per stage, the largest relative difference and the cosine of the gradients with
respect to the logits. The reference computes in float32, so agreement is to ~1e-5.
Writes ``loss_reference.md`` and ``loss_reference.json``.
"""

# ruff: noqa: I001  (tfcascade is imported before tensorflow: it sets TF_USE_LEGACY_KERAS)
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import tfcascade  # noqa: F401
import tensorflow as tf

from bench.common import RESULTS_DIR, markdown_table, write_results
from tfcascade.losses import get

SLOTS = 10
LOSSES = ["bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2", "lcron"]
CATEGORIES = {2: ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg"),
              3: ("rerank_pos", "rerank_neg", "rank_neg", "coarse_neg", "prerank_neg")}
NEGATIVE_LABELS = {2: (7, 6, 5), 3: (8, 7, 6, 5)}
DFTOPK_LOSSES = ["dftopk", "lapsum"]  # two stages only: the DFTopK reference has no three-stage code

# Runs inside the PyTorch interpreter: loads the inputs, calls the official loss functions the
# way its training scripts call them, writes values and gradients.
WORKER = r'''
import importlib, json, logging, sys
import numpy as np
import torch

root, dftopk_root, inputs_path, out_path = sys.argv[1:5]
sys.path.insert(0, root)
data = np.load(inputs_path)
stages = int(data["stages"])
losses = json.loads(str(data["losses"]))
cats = 4 if stages == 2 else 5
device = torch.device("cpu")
logger = logging.getLogger("reference")
masks = [torch.tensor(m, dtype=torch.float32) for m in data["masks"]]
ranks = [torch.tensor(r, dtype=torch.int64) for r in data["rank_index"]]
inputs = [torch.zeros(1)] * 3 + masks + ranks
pkg = "deep_components.loss." + ("two_stage" if stages == 2 else "three_stage")


def conf(**kw):
    return type("", (), kw)


def run_dftopk(name, pre, ret):
    # The DFTopK repository is a separate tree with its own deep_components package.
    for key in [k for k in sys.modules if k.startswith("deep_components")]:
        del sys.modules[key]
    sys.path.insert(0, dftopk_root + "/torch")
    m = importlib.import_module("deep_components.loss.two_stage.topk_loss")
    sys.path.pop(0)
    version, extra = ("dftopkjoint", {"tau": 1.0}) if name == "dftopk" else ("lapsumjoint", {"alpha": torch.tensor(5.0)})
    out = m.compute_cascade_topk_metrics(inputs, pre, ret, device, conf(gt_num=10), version=version,
                                         loss_model=m.TopKLossModel_joint(device), **extra)
    for key in [k for k in sys.modules if k.startswith("deep_components")]:
        del sys.modules[key]
    return out["total_loss"]


def run(name, logits):
    mod = lambda m: importlib.import_module(f"{pkg}.{m}")
    first, *rest = logits  # retrieval first; the reference passes the last stage first
    later = rest[::-1]
    if stages == 2:
        pre, ret = later[0], first
        if name in ("dftopk", "lapsum"):
            return run_dftopk(name, pre, ret)
        if name == "bce":
            return sum(mod("bce").compute_bce_metrics(inputs, pre, ret, device))
        if name == "icc":
            return mod("icc").compute_icc_metrics(inputs, pre, ret, device, conf(joint_recall_k=30))["total_loss"]
        if name == "rankflow":
            return mod("rankflow").compute_rankflow_metrics(inputs, pre, ret, device, alpha=0)["total_loss"]
        if name == "fs_ranknet":
            f = mod("fs_ranknet").compute_fsltr_loss_all_by_rank
            return f(masks, pre, None, device)[0] + f(masks, ret, None, device)[0]
        if name == "fs_lambdaloss":
            return mod("fs_lambdaloss").compute_fsltr_lambda_all_by_rank(
                inputs, pre, ret, device, smooth_fraction=0.8, topn=30)["total_loss"]
        if name in ("arf", "arf_v2"):
            m = mod("arf")
            c = dict(top_k=10, gt_num=10, global_size=40)
            return m.compute_arf_metrics(
                inputs, pre, ret, device, 40, conf(model_name="prerank_model", support_m=20, **c),
                conf(model_name="retrival_model", support_m=30, **c), logger,
                m.ArfLossModel(device), m.ArfLossModel(device), loss_type=name)["total_loss"]
        if name == "lcron":
            m = mod("lcron")
            jc = conf(prerank_model_name="joint/prerank_model", recall_model_name="joint/recall_model",
                      joint_recall_k=30, joint_prerank_k=20, gt_num=10, global_size=40)
            return m.compute_lcron_metrics(inputs, pre, ret, device, m.LcronLossModel(device), 40, jc,
                                           logger)["total_loss"]
    else:
        rank, pre, ret = later[0], later[1], first
        if name == "bce":
            return sum(mod("bce").compute_bce_loss(inputs, rank, pre, ret, device))
        if name == "icc":
            return mod("icc").compute_icc_loss(inputs, rank, pre, ret, device)["total_loss"]
        if name == "rankflow":
            return mod("rankflow").compute_rankflow_loss(inputs, rank, pre, ret, device)["total_loss"]
        if name == "fs_ranknet":
            f = mod("fs_ranknet").compute_fs_ranknet_loss
            return sum(f(masks, x, device)[0] for x in (rank, pre, ret))
        if name == "fs_lambdaloss":
            return mod("fs_lambdaloss").compute_fs_lambdaloss(inputs, rank, pre, ret, device, 0.8, 30)["total_loss"]
        if name in ("arf", "arf_v2"):
            m = mod("arf")
            out = m.compute_arf_loss(inputs, rank, pre, ret, device, m.ArfLossModel(device), m.ArfLossModel(device),
                                     m.ArfLossModel(device), loss_type=name)
            return out["rank_loss"] + out["prerank_loss"] + out["retrival_loss"]
        if name == "lcron":
            m = mod("lcron")
            return m.compute_lcron_loss(inputs, rank, pre, ret, device, m.LcronLossModel(device), "v0")["total_loss"]
    raise KeyError(name)


out = {}
for name in losses:
    logits = [[torch.tensor(part, dtype=torch.float32, requires_grad=True) for part in stage]
              for stage in data["logits"]]
    value = run(name, logits)
    value = value.reshape(()) if value.dim() else value
    value.backward()
    grad = lambda p: np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.numpy()
    out[name] = {"value": float(value.detach()),
                 "grad": [np.concatenate([grad(p) for p in stage], axis=1).tolist() for stage in logits]}
json.dump(out, open(out_path, "w"))
'''


def make_inputs(stages: int, batch: int, seed: int) -> dict:
    """Logits ``[S, C, B, 10]``, masks and rank indices ``[C, B, 10]`` as the reference's loader."""
    rng = np.random.default_rng(seed)
    cats = len(CATEGORIES[stages])
    rank_index = np.zeros((cats, batch, SLOTS), np.int64)
    rank_index[0] = 30 - np.stack([rng.permutation(SLOTS) for _ in range(batch)])
    for c, label in enumerate(NEGATIVE_LABELS[stages], start=1):
        rank_index[c] = label
    return {"stages": stages, "masks": np.ones((cats, batch, SLOTS), np.float32), "rank_index": rank_index,
            "logits": rng.normal(0.0, 1.5, (stages, cats, batch, SLOTS)).astype(np.float32)}


def ours(name: str, case: dict) -> tuple[float, list[np.ndarray]]:
    stages = case["stages"]
    labels = tf.constant(np.concatenate(list(case["rank_index"]), axis=1), tf.float32)
    scores = [tf.Variable(np.concatenate(list(stage), axis=1)) for stage in case["logits"]]
    loss = get(name, stages=stages)
    with tf.GradientTape() as tape:
        value = loss(labels, scores)
    return float(value), [g.numpy() for g in tape.gradient(value, scores)]


def compare(value: float, grads: list, ref: dict) -> dict:
    ref_grads = [np.asarray(g) for g in ref["grad"]]
    rel_value = abs(value - ref["value"]) / max(abs(ref["value"]), 1e-12)
    rel_grad, cosine = [], []
    for g, r in zip(grads, ref_grads):
        rel_grad.append(float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)))
        cosine.append(float((g * r).sum() / max(np.linalg.norm(g) * np.linalg.norm(r), 1e-30)))
    return {"value": value, "reference": ref["value"], "rel_value": rel_value,
            "rel_grad": rel_grad, "cosine": cosine}


def run_reference(root: Path, dftopk_root: Path | None, python: str, case: dict, losses: list[str],
                  work: Path) -> dict:
    inputs = work / f"inputs{case['stages']}.npz"
    np.savez(inputs, losses=json.dumps(losses), **case)
    worker = work / "worker.py"
    worker.write_text(WORKER)
    out = work / f"out{case['stages']}.json"
    proc = subprocess.run([python, str(worker), str(root), str(dftopk_root or ""), str(inputs), str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"bench.loss_reference: the reference run failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="local clone of kwai/LCRON")
    parser.add_argument("--dftopk-reference", default=None, help="local clone of zhangzhen97/DFTOPK")
    parser.add_argument("--torch-python", default="python3", help="a python with torch==2.13.0")
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    root = Path(args.reference).resolve()
    if not (root / "deep_components" / "loss").is_dir():
        parser.error(f"--reference={args.reference!r} has no deep_components/loss (a kwai/LCRON clone?)")
    losses = args.losses.split(",")
    dftopk_root = None
    if args.dftopk_reference:
        dftopk_root = Path(args.dftopk_reference).resolve()
        if not (dftopk_root / "torch" / "deep_components" / "loss").is_dir():
            parser.error(f"--dftopk-reference={args.dftopk_reference!r} has no torch/deep_components/loss")
        losses += [name for name in DFTOPK_LOSSES if name not in losses]
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for stages in args.stages:
            case = make_inputs(stages, args.batch, args.seed + stages)
            stage_losses = [name for name in losses if stages == 2 or name not in DFTOPK_LOSSES]
            refs = run_reference(root, dftopk_root, args.torch_python, case, stage_losses, Path(tmp))
            for name in stage_losses:
                value, grads = ours(name, case)
                r = compare(value, grads, refs[name])
                r["pass"] = r["rel_value"] < args.tolerance and max(r["rel_grad"]) < args.tolerance
                results[f"{name}/{stages}"] = r
                rows.append([name, stages, r["reference"], r["value"], r["rel_value"], max(r["rel_grad"]),
                             min(r["cosine"]), "yes" if r["pass"] else "**no**"])
    commit = _commit(root)
    title = f"kwai/LCRON @ {commit}" + (f", zhangzhen97/DFTOPK @ {_commit(dftopk_root)}" if dftopk_root else "")
    md = (f"# Cascade losses against the official loss functions ({title})\n\n"
          f"Batch {args.batch}, full lists (10 slots per stage sample), logits ~ N(0, 1.5²), seed {args.seed}; "
          f"the reference in float32 (PyTorch), ours in float32 (TensorFlow). Gradients are with respect to "
          f"every stage's logits; pass = relative differences below {args.tolerance:g}.\n\n"
          + markdown_table(["loss", "stages", "reference value", "tfcascade value", "rel. Δ value",
                            "max rel. Δ gradient", "min cosine", "pass"], rows) + "\n")
    write_results("loss_reference", {"reference_commit": commit,
                                     "dftopk_commit": _commit(dftopk_root) if dftopk_root else None, "batch": args.batch, "results": results}, md,
                  Path(args.out))
    print(md)
    return 0 if all(r["pass"] for r in results.values()) else 1


def _commit(root: Path) -> str:
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown (not a git clone)"


if __name__ == "__main__":
    raise SystemExit(main())
