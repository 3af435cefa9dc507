"""``tfcascade pipeline``: run the TFX cascade pipeline locally, or compile it for Kubeflow.

::

    tfcascade pipeline run --preset small --pipeline-root runs/p --serving-dir runs/serving \\
        [--data RAW_DIR] [--baselines random,popularity --margin 0.005] [--min-joint-recall 0.15]
        [--loss lcron --stages 2 --qs 30,20 --epochs 1]
    tfcascade pipeline compile --kubeflow --output pipeline.json [--image IMAGE]

TFX is imported only when a sub-command runs (``import tfcascade`` never loads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tfcascade.cli.train import add_spec_options, spec_from_args, usage_errors

SIMULATED_MARKER = ".simulated"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pipeline",
        help="run the TFX pipeline (simulate -> preprocess -> train -> validate -> push)",
        description=__doc__.splitlines()[0],
    )
    sub = parser.add_subparsers(dest="pipeline_command", metavar="{run,compile}")

    run_p = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner, SQLite MLMD)")
    run_p.add_argument("--preset", default="small", choices=("tiny", "small"),
                       help="simulated data size when --data is not given (default: small)")
    run_p.add_argument("--data", default=None, help="raw logs in the RecFlow layout "
                       "(default: simulate --preset into <pipeline-root>/data/)")
    run_p.add_argument("--seed", type=int, default=0, help="simulation and training seed")
    run_p.add_argument("--pipeline-root", required=True, help="artifacts + metadata.sqlite")
    run_p.add_argument("--serving-dir", required=True, help="TF Serving model base folder")
    run_p.add_argument("--model-name", default=None, help="served model name (default: cascade)")
    run_p.add_argument("--pipeline-name", default=None, help="default: tfcascade")
    add_blessing_options(run_p)
    run_p.add_argument("--tolerance", type=float, default=None,
                       help="allowed drop below the latest blessed model's joint recall")
    run_p.add_argument("--loss", default="lcron", help="cascade loss (tfcascade.training)")
    add_spec_options(run_p)
    run_p.add_argument("--epochs", type=int, default=1)
    run_p.add_argument("--batch-size", type=int, default=1024)
    run_p.add_argument("--train-steps", type=int, default=None, help="cap on steps per epoch")
    run_p.add_argument("--temperature", type=float, default=None)
    run_p.add_argument("--sampled-negatives", type=int, default=0,
                       help="in-batch sampled negatives appended to every training list")
    run_p.add_argument("--no-cache", action="store_true", help="re-run every component")
    run_p.add_argument("--json", action="store_true", help="print the summary as JSON")

    comp_p = sub.add_parser("compile", help="compile the pipeline spec for Kubeflow V2 / Vertex")
    comp_p.add_argument("--kubeflow", action="store_true", required=True,
                        help="compile with KubeflowV2DagRunner (the only target)")
    comp_p.add_argument("--output", required=True, help="PipelineJob JSON file to write")
    comp_p.add_argument("--image", default=None, help="container image of every step")
    comp_p.add_argument("--kfp-package", default=None, metavar="FILE.yaml",
                        help="also write the package a Kubeflow Pipelines v2 cluster runs (the bare "
                             "PipelineSpec; the --output JSON is what Vertex AI runs)")
    comp_p.add_argument("--data", default=None, help="cluster path of the raw logs")
    comp_p.add_argument("--pipeline-root", default=None, help="cluster path (gs://...)")
    comp_p.add_argument("--serving-dir", default=None, help="cluster path (gs://...)")
    comp_p.add_argument("--loss", default="lcron")
    add_spec_options(comp_p)
    comp_p.add_argument("--epochs", type=int, default=1)
    add_blessing_options(comp_p)
    parser.set_defaults(_pipeline_parser=parser)
    return parser


def add_blessing_options(parser: argparse.ArgumentParser) -> None:
    """``--baselines``, ``--margin`` and ``--min-joint-recall``: the validator's blessing rule."""
    parser.add_argument("--baselines", type=_names, default=None,
                        help="naive rankers the cascade must beat on the eval split, comma-separated "
                             "(default: random,popularity; 'none' for none)")
    parser.add_argument("--margin", type=float, default=None,
                        help="by how much it must beat each of them in joint recall (default: 0.005)")
    parser.add_argument("--min-joint-recall", type=float, default=None,
                        help="also require this absolute Joint Recall@K@q_T (default: no absolute bar)")


def _names(value: str) -> tuple[str, ...]:
    return () if value.strip().lower() == "none" else tuple(v.strip() for v in value.split(",") if v.strip())


def blessing_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The blessing options given on the command line, as ``create_pipeline`` keywords.

    Raises:
      UsageError: an unknown ``--baselines`` name, or a ``--margin`` / ``--min-joint-recall`` /
        ``--tolerance`` outside [0, 1], naming the option.
    """
    from tfcascade.cli.main import UsageError
    from tfcascade.components.blessing import decide_blessing
    from tfcascade.components.cascade_evaluation import BASELINES

    unknown = [name for name in args.baselines or () if name not in BASELINES]
    if unknown:
        raise UsageError(f"--baselines: {','.join(unknown)} is not a naive ranker; choose from "
                         f"{','.join(BASELINES)} or none")
    for key in ("margin", "min_joint_recall", "tolerance"):
        value = getattr(args, key, None)
        if value is not None:
            try:
                decide_blessing(0.0, **{key: value})
            except (TypeError, ValueError) as err:
                raise UsageError(f"--{key.replace('_', '-')}: {err}") from None
    return {key: getattr(args, key) for key in ("min_joint_recall", "baselines", "margin")
            if getattr(args, key) is not None}


def simulated_data(pipeline_root: str, preset: str, seed: int) -> str:
    """Simulates ``preset`` once into ``<pipeline_root>/data/<preset>-seed<seed>/`` and reuses it.

    Re-simulating on every run would change the files (and their fingerprint) and defeat the
    pipeline's cache, so a completed simulation is marked and kept.
    """
    from tfcascade.data import simulate

    out = os.path.join(os.path.abspath(pipeline_root), "data", f"{preset}-seed{seed}")
    marker = os.path.join(out, SIMULATED_MARKER)
    if not os.path.exists(marker):
        print(f"simulating the {preset!r} preset into {out} ...", flush=True)
        simulate(out, preset=preset, seed=seed)
        with open(marker, "w") as f:
            f.write(json.dumps({"preset": preset, "seed": seed}))
    return out


def _run(args: argparse.Namespace) -> int:
    from tfcascade.pipelines import cascade_pipeline as cp
    from tfcascade.pipelines.local_runner import run_pipeline

    spec = spec_from_args(args)
    config = _config(args, seed=args.seed, batch_size=args.batch_size, temperature=args.temperature,
                     steps_per_epoch=args.train_steps, sampled_negatives=args.sampled_negatives)
    data_dir = args.data or simulated_data(args.pipeline_root, args.preset, args.seed)
    kwargs: dict[str, Any] = {"spec": spec, "config": config, "enable_cache": not args.no_cache}
    for key in ("model_name", "pipeline_name", "tolerance"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    kwargs.update(blessing_kwargs(args))
    summary = run_pipeline(data_dir=data_dir, pipeline_root=args.pipeline_root,
                           serving_dir=args.serving_dir, **kwargs)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1))
    else:
        print(format_summary(summary, os.path.abspath(args.serving_dir),
                             kwargs.get("model_name", cp.DEFAULT_MODEL_NAME)))
    return 0 if summary.joint_recall is not None else 1


def format_summary(summary, serving_dir: str, model_name: str) -> str:
    """The human-readable end-of-run report, with the commands to serve and query the model."""
    lines = [f"pipeline run {summary.run_id} ({summary.pipeline_root})"]
    for node, state in summary.node_states.items():
        lines.append(f"  {node:32s} {state}")
    if summary.joint_recall is None:
        lines.append("no JointRecallValidator result (see the log above)")
        return "\n".join(lines)
    baseline = ("none yet" if summary.baseline_joint_recall is None
                else f"{summary.baseline_joint_recall:.4f}")
    bars = []
    if summary.naive_joint_recalls:
        margin = f" by > {summary.margin:.4f}" if summary.margin is not None else ""
        bars.append(f"naive rankers to beat{margin}: " + ", ".join(
            f"{name} {value:.4f}" for name, value in summary.naive_joint_recalls.items()))
    if summary.min_joint_recall is not None:
        bars.append(f"threshold {summary.min_joint_recall:.4f}")
    lines += [
        f"joint recall:     {summary.joint_recall:.4f}  ({'; '.join([*bars, f'latest blessed {baseline}'])})",
        f"blessed:          {'yes' if summary.blessed else 'no'}",
    ]
    lines += [f"  - {reason}" for reason in summary.reasons]
    if summary.metrics_path:
        lines.append(f"metrics:          {summary.metrics_path}")
    if not summary.pushed:
        lines.append(f"pushed:           no ({os.path.join(serving_dir, model_name)} unchanged)")
        return "\n".join(lines)
    lines += [
        f"pushed:           {summary.pushed_destination} (version {summary.pushed_version})",
        "",
        "serve it (TF Serving in docker, deploy/docker-compose.yml):",
        f"  MODEL_BASE={serving_dir} MODEL_NAME={model_name} "
        "docker compose -f deploy/docker-compose.yml up -d",
        "query it (REST; the request holds one user's raw ids and candidate list):",
        f"  curl -s -X POST http://localhost:8501/v1/models/{model_name}:predict "
        "-d @deploy/example_request.json",
        "or load it in Python:",
        f"  python -c \"import tensorflow as tf; m = tf.saved_model.load('{summary.pushed_destination}'); "
        "print(list(m.signatures))\"",
    ]
    return "\n".join(lines)


def _compile(args: argparse.Namespace) -> int:
    from tfcascade.cli.main import UsageError
    from tfcascade.pipelines import kubeflow_runner as kr  # light: TFX is imported when compiling

    if args.kfp_package is not None:
        try:  # before the compile's slow imports
            kr.check_kfp_package_path(args.kfp_package)
        except ValueError as err:
            raise UsageError(f"--kfp-package: {err}") from None

    kwargs: dict[str, Any] = {"spec": spec_from_args(args), "config": _config(args), **blessing_kwargs(args)}
    job = kr.compile_pipeline(
        args.output,
        data_dir=args.data or kr.DEFAULT_DATA,
        pipeline_root=args.pipeline_root or kr.DEFAULT_ROOT,
        serving_dir=args.serving_dir or kr.DEFAULT_SERVING,
        image=args.image or kr.DEFAULT_IMAGE,
        **kwargs,
    )
    tasks = sorted(job["pipelineSpec"]["root"]["dag"]["tasks"])
    print(f"wrote {os.path.abspath(args.output)} ({len(tasks)} tasks: {', '.join(tasks)})")
    print("checked: every step runs one image, every executor class and the Trainer's run_fn resolve, "
          "its custom_config is valid and from this code, the validator's cuts fit the spec")
    print("submit it to Vertex AI Pipelines:")
    print("  python -c \"from google.cloud import aiplatform as ai; ai.PipelineJob("
          f"display_name='tfcascade', template_path='{args.output}').submit()\"")
    if args.kfp_package is None:
        print("for a Kubeflow Pipelines cluster, add --kfp-package pipeline_spec.yaml")
        return 0
    kr.write_kfp_package(job, args.kfp_package)
    print(f"wrote {os.path.abspath(args.kfp_package)} (the KFP package); submit it to Kubeflow Pipelines:")
    print(f"  python -c \"import kfp; kfp.Client(host=HOST).create_run_from_pipeline_package("
          f"'{args.kfp_package}')\"")
    return 0


def _config(args: argparse.Namespace, **options: Any):
    """The TrainConfig of ``--loss``, ``--epochs`` and ``options`` (UsageError naming a bad one)."""
    from tfcascade.training import TrainConfig

    with usage_errors({"steps_per_epoch": "--train-steps"}):
        return TrainConfig.from_dict({"loss": args.loss, "epochs": args.epochs, **options})


def run(args: argparse.Namespace) -> int:
    if args.pipeline_command == "run":
        return _run(args)
    if args.pipeline_command == "compile":
        return _compile(args)
    args._pipeline_parser.print_help(sys.stderr)
    return 2
