"""Consistency checks of a compiled Kubeflow ``PipelineJob`` before it is submitted.

A compiled pipeline names code by strings that only the cluster resolves: each step's
container image, each custom executor's class path, the Trainer's ``run_fn`` and its
``custom_config``. A wrong one fails a step hours into a run. :func:`check_pipeline_job`
resolves them all here, with the code that compiled the job:

- every step runs one and the same image (the one given at compile time);
- every ``--executor_class_path`` and the Trainer's ``run_fn`` import and resolve;
- the Trainer's ``custom_config`` is a valid ``TrainConfig`` + ``CascadeSpec`` and its
  ``code_fingerprint`` is this code's (the image must hold the code that compiled the job);
- the JointRecallValidator's ``k`` / ``qs`` (when set) fit the Trainer's spec, and its blessing
  bars are fractions.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from tfcascade.components import trainer_module
from tfcascade.pipelines.cascade_pipeline import TRAINER, VALIDATOR, code_fingerprint

CLASS_PATH_FLAG = "--executor_class_path"


def _resolves(path: str) -> str | None:
    """None when ``module.attribute`` imports here, else why not (one line)."""
    module, _, attribute = str(path).rpartition(".")
    try:
        getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _parameters(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task's constant parameters as Python values."""
    values = {}
    for name, parameter in task.get("inputs", {}).get("parameters", {}).items():
        constant = parameter.get("runtimeValue", {}).get("constantValue")
        if isinstance(constant, Mapping) and constant:
            kind, value = next(iter(constant.items()))
            values[name] = int(value) if kind == "intValue" else value
        elif constant is not None:
            values[name] = constant
    return values


def check_pipeline_job(job: Mapping[str, Any], image: str | None = None) -> list[str]:
    """The problems of a compiled ``PipelineJob`` (module docstring); empty when consistent.

    Args:
      job: the ``PipelineJob`` JSON as a dict (``kubeflow_runner.compile_pipeline``'s result).
      image: the image every step must run (None: any, as long as it is one).

    Returns:
      One line per problem, naming the step and the value.
    """
    spec = job.get("pipelineSpec", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    problems = []
    images = sorted({str(c.get("image")) for c in containers.values()})
    if not containers:
        problems.append("no step runs a container")
    elif len(images) > 1 or (image is not None and images != [image]):
        problems.append(f"the steps run the images {images}; every step must run image={image or images[0]!r}")
    for name, container in sorted(containers.items()):
        args = list(container.get("args", []))
        for flag, value in zip(args, args[1:]):
            if flag == CLASS_PATH_FLAG and (why := _resolves(value)):
                problems.append(f"{name}: executor class {value!r} does not resolve ({why})")
    tasks = spec.get("root", {}).get("dag", {}).get("tasks", {})
    if TRAINER not in tasks:
        return problems + [f"no {TRAINER} task"]
    trainer = _parameters(tasks[TRAINER])
    if why := _resolves(trainer.get("run_fn", "")):
        problems.append(f"{TRAINER}: run_fn {trainer.get('run_fn')!r} does not resolve ({why})")
    try:
        custom = json.loads(trainer.get("custom_config") or "{}")
        _, cascade = trainer_module.resolve_config(custom)
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        return problems + [f"{TRAINER}: custom_config is not a valid TrainConfig and CascadeSpec ({err})"]
    compiled_from = custom.get(trainer_module.CODE_FINGERPRINT_KEY)
    if compiled_from and compiled_from != code_fingerprint():
        problems.append(f"{TRAINER}: code_fingerprint {compiled_from[:12]}… is not this code's "
                        f"{code_fingerprint()[:12]}…: compile with the code the image holds")
    validator = _parameters(tasks.get(VALIDATOR, {}))
    if "qs" in validator or "k" in validator:
        qs = json.loads(validator["qs"]) if validator.get("qs") else list(cascade.qs)
        try:
            type(cascade)(cascade.stage_kinds, cascade.stage_names, qs, int(validator.get("k", cascade.k)))
        except ValueError as err:
            problems.append(f"{VALIDATOR}: k / qs do not fit the Trainer's spec ({err})")
    for name in ("min_joint_recall", "tolerance", "margin"):
        value = validator.get(name)
        if value is not None and not 0.0 <= float(value) <= 1.0:
            problems.append(f"{VALIDATOR}: {name}={value!r} is not in [0, 1]")
    return problems
