"""RecFlowExampleGen: the Beam preprocessing of a RecFlow-layout folder as a TFX component.

Why a custom component rather than ``ImportExampleGen`` over already-written TFRecords: the
preprocessing (``tfcascade.beam.preprocess.run_preprocess``) produces more than examples — the
vocabularies the Trainer's embedding tables and the serving model's raw-id lookup are built
from, and the metadata (list length, stages, vocabulary sizes). Keeping them inside the
``Examples`` artifact keeps them in ML Metadata lineage with the examples they belong to, lets
Kubeflow move them between steps like any artifact, and lets the pipeline's cache see a change
of the raw logs. ``ImportExampleGen`` would need the vocabularies passed beside the pipeline.

Artifact layout (what ``StatisticsGen`` / ``Trainer`` expect, plus the extras)::

    <uri>/Split-train/part-*.tfrecord.gz   GZIP tf.Examples, one per request (tfcascade.features)
    <uri>/Split-eval/part-*.tfrecord.gz
    <uri>/vocab/<feature>.txt, <uri>/metadata.json, <uri>/schema.json, <uri>/stats.json
    <uri>/dead_letter/                     rows the preprocessing rejected

The component re-runs when the raw folder changes even if its path does not: the pipeline passes
:func:`folder_fingerprint` of the input folder as an execution property, which is part of the
cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

SPLITS = ("train", "eval")


def folder_fingerprint(folder: str) -> str:
    """SHA-256 over the relative path, size and modification time of every file under ``folder``.

    Raises:
      ValueError: ``folder`` is not a directory.
    """
    if not os.path.isdir(folder):
        raise ValueError(f"input_dir must be an existing folder, got input_dir={folder!r}")
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            stat = os.stat(path)
            rel = os.path.relpath(path, folder)
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class RecFlowExampleGenSpec(ComponentSpec):
    """Parameters: the raw folder, cascade depth, eval days and the folder's fingerprint."""

    PARAMETERS = {
        "input_dir": ExecutionParameter(type=str),
        "stages": ExecutionParameter(type=int),
        "eval_days": ExecutionParameter(type=int),
        "input_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    INPUTS: dict[str, ChannelParameter] = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class RecFlowExampleGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Runs ``run_preprocess`` with the component's Beam arguments into the Examples artifact."""

    def Do(  # noqa: N802  (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        from tfcascade.beam.preprocess import run_preprocess

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        stats = run_preprocess(
            exec_properties["input_dir"],
            examples.uri,
            stages=int(exec_properties["stages"]),
            eval_days=int(exec_properties["eval_days"]),
            beam_args=list(self._beam_pipeline_args) or None,
        )
        for split in SPLITS:
            source = os.path.join(examples.uri, split)
            if not fileio.isdir(source):
                raise RuntimeError(f"preprocessing wrote no {split!r} split under {examples.uri}")
            fileio.rename(source, os.path.join(examples.uri, f"Split-{split}"))
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        examples.set_string_custom_property("preprocess_stats", json.dumps(stats, default=str))
        logging.info("RecFlowExampleGen wrote %s: %s", examples.uri, stats)


class RecFlowExampleGen(base_beam_component.BaseBeamComponent):
    """TFX component: RecFlow-layout folder -> ``Examples`` (train / eval) + vocabularies.

    Args:
      input_dir: the raw logs (RecFlow layout, e.g. written by ``tfcascade.data.simulate``).
      stages: 2 or 3, the cascade the lists and labels are organised for.
      eval_days: how many of the last days go to the eval split.
      input_fingerprint: a digest of the raw folder's content (default: computed now with
        :func:`folder_fingerprint`); part of the cache key.
    """

    SPEC_CLASS = RecFlowExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(RecFlowExampleGenExecutor)

    def __init__(
        self,
        input_dir: str,
        stages: int = 2,
        eval_days: int = 1,
        input_fingerprint: str | None = None,
    ):
        if stages not in (2, 3):
            raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
        if isinstance(eval_days, bool) or not isinstance(eval_days, int) or eval_days < 1:
            raise ValueError(f"eval_days must be an integer >= 1, got eval_days={eval_days!r}")
        if input_fingerprint is None:
            input_fingerprint = folder_fingerprint(input_dir)
        super().__init__(
            spec=RecFlowExampleGenSpec(
                input_dir=input_dir,
                stages=stages,
                eval_days=eval_days,
                input_fingerprint=input_fingerprint,
                examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
