"""Compiles the cascade pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

``KubeflowV2DagRunner`` does not run anything: it writes a ``PipelineJob`` JSON (KFP pipeline
spec schema 2.x) that is submitted to KFP (``kfp.Client().create_run_from_pipeline_package``)
or Vertex AI (``aiplatform.PipelineJob(template_path=...)``). Every step runs the container
image given here; it must hold this repository installed with ``pip install .[tfx]`` (see
docs/pipeline.md). Paths must be reachable from the cluster (``gs://...``); ML Metadata is the
cluster's, so no connection config is given.

Needs the ``kfp-pipeline-spec`` package (TFX's ``kfp`` extra).

Usage::

    python -m tfcascade.pipelines.kubeflow_runner --output pipeline.json \\
        --data gs://BUCKET/recflow --pipeline-root gs://BUCKET/root \\
        --serving-dir gs://BUCKET/serving --image IMAGE

or ``tfcascade pipeline compile --kubeflow --output pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_IMAGE = "tfcascade-tfx:latest"
# Placeholder locations used when compiling without real ones; replace at submission time.
DEFAULT_DATA = "gs://YOUR_BUCKET/tfcascade/recflow"
DEFAULT_ROOT = "gs://YOUR_BUCKET/tfcascade/pipeline_root"
DEFAULT_SERVING = "gs://YOUR_BUCKET/tfcascade/serving"


def compile_pipeline(
    output: str,
    *,
    data_dir: str = DEFAULT_DATA,
    pipeline_root: str = DEFAULT_ROOT,
    serving_dir: str = DEFAULT_SERVING,
    image: str = DEFAULT_IMAGE,
    **pipeline_kwargs: Any,
) -> dict[str, Any]:
    """Writes the pipeline's Kubeflow V2 ``PipelineJob`` JSON to ``output`` and returns it.

    Args:
      output: the JSON file to write (its folder is created).
      data_dir, pipeline_root, serving_dir: as in ``create_pipeline``; cluster-visible paths.
      image: the container image every step runs.
      **pipeline_kwargs: any other argument of ``tfcascade.pipelines.cascade_pipeline.create_pipeline``.

    Returns:
      The ``PipelineJob`` as a dict, checked by ``spec_check.check_pipeline_job`` (one image,
      every executor class and the ``run_fn`` resolve, a valid ``custom_config`` from this code,
      validator cuts that fit the spec).

    Raises:
      ImportError: ``kfp-pipeline-spec`` is not installed.
      ValueError: the compiled job is inconsistent (the file is removed; the message lists
        every problem).
    """
    try:
        from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kf
    except ModuleNotFoundError as err:
        raise ImportError(
            "compiling for Kubeflow needs the kfp-pipeline-spec package (TFX's `kfp` extra: "
            f"pip install 'tfx[kfp]==1.21.0'); import failed: {err}"
        ) from err

    from tfcascade.pipelines.cascade_pipeline import create_pipeline
    from tfcascade.pipelines.spec_check import check_pipeline_job

    if not output:
        raise ValueError(f"output must be a file path, got output={output!r}")
    # The input folder lives on the cluster's storage: it cannot be fingerprinted from here.
    pipeline_kwargs.setdefault("input_fingerprint", "")
    pipeline = create_pipeline(
        data_dir=data_dir,
        pipeline_root=pipeline_root,
        serving_dir=serving_dir,
        **pipeline_kwargs,
    )
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    runner = kf.KubeflowV2DagRunner(
        config=kf.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(pipeline, write_out=True)
    with open(output) as f:
        job = json.load(f)
    problems = check_pipeline_job(job, image)
    if problems:
        os.remove(output)
        raise ValueError(f"the compiled pipeline is inconsistent ({len(problems)} problems): " + "; ".join(problems))
    return job


def check_kfp_package_path(path: str) -> None:
    """Refuses a KFP package name the KFP client would refuse (it must end in .yaml / .yml).

    Raises:
      ValueError: naming ``path``.
    """
    if not str(path).endswith((".yaml", ".yml")):
        raise ValueError(f"a KFP package must be a .yaml or .yml file (the KFP client refuses other "
                         f"names), got path={path!r}")


def write_kfp_package(job: dict[str, Any], path: str) -> dict[str, Any]:
    """Writes what a Kubeflow Pipelines v2 cluster runs: the job's bare ``PipelineSpec`` with its
    pipeline root as ``defaultPipelineRoot``, as YAML (JSON text, which is YAML).

    ``kfp.Client().create_run_from_pipeline_package`` takes only such a file (named ``.yaml`` or
    ``.yml``), not the Vertex ``PipelineJob`` JSON that :func:`compile_pipeline` writes.

    Args:
      job: the ``PipelineJob`` returned by :func:`compile_pipeline`.
      path: the file to write; must end in ``.yaml`` or ``.yml``.

    Returns:
      The written package as a dict.

    Raises:
      ValueError: ``path`` does not end in ``.yaml`` / ``.yml``.
    """
    check_kfp_package_path(path)
    package = {**job["pipelineSpec"], "defaultPipelineRoot": job["runtimeConfig"]["gcsOutputDirectory"]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(package, f, indent=1)
    return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="PipelineJob JSON to write")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--pipeline-root", default=DEFAULT_ROOT)
    parser.add_argument("--serving-dir", default=DEFAULT_SERVING)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--stages", type=int, default=2, choices=(2, 3))
    parser.add_argument("--loss", default="lcron")
    args = parser.parse_args(argv)
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig

    job = compile_pipeline(args.output, data_dir=args.data, pipeline_root=args.pipeline_root,
                           serving_dir=args.serving_dir, image=args.image,
                           spec=CascadeSpec.default(args.stages), config=TrainConfig(loss=args.loss))
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.output}: {len(tasks)} tasks: {', '.join(sorted(tasks))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
