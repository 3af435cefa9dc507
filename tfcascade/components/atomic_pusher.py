"""A Pusher that publishes blessed models to TF Serving's folder layout atomically.

TFX's stock Pusher copies the SavedModel file by file into ``<base>/<unix time>/``; a model
server polling that folder can see a half-copied version. ``AtomicPusher`` keeps the Pusher's
interface and blessing check (``blessed == 1`` on the ``ModelBlessing``; unblessed models are
recorded as ``pushed = 0`` and nothing is written) but publishes with
:func:`tfcascade.serving.export.publish_version`: the model is copied into a temporary folder beside the
versions and renamed to the next numeric version, ``<serving_dir>/<model_name>/<version>/``,
in one ``rename``.

Configure it like the stock Pusher, with a filesystem destination whose ``base_directory`` is
``<serving_dir>/<model_name>``.

Re-running a pipeline whose Trainer was cached hands the same model to the Pusher again; it is
then not published a second time: the version it went to is recorded in
``<serving_dir>/<model_name>/.tfcascade_pushes.json`` (TF Serving ignores names that are not
numbers) and reported again.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

PUSH_LEDGER = ".tfcascade_pushes.json"


def split_base_directory(base_directory: str) -> tuple[str, str]:
    """``<serving_dir>/<model_name>`` -> ``(serving_dir, model_name)``.

    Raises:
      ValueError: ``base_directory`` has no parent folder or an empty model name.
    """
    trimmed = base_directory.rstrip("/")
    serving_dir, model_name = os.path.dirname(trimmed), os.path.basename(trimmed)
    if not serving_dir or not model_name:
        raise ValueError(
            "push_destination.filesystem.base_directory must be <serving_dir>/<model_name>, "
            f"got base_directory={base_directory!r}"
        )
    return serving_dir, model_name


def _read_ledger(model_root: str) -> dict[str, str]:
    path = os.path.join(model_root, PUSH_LEDGER)
    if not fileio.exists(path):
        return {}
    with fileio.open(path, "r") as f:
        return json.loads(f.read() or "{}")


def _write_ledger(model_root: str, ledger: dict[str, str]) -> None:
    path = os.path.join(model_root, PUSH_LEDGER)
    tmp = path + ".tmp"
    with fileio.open(tmp, "w") as f:
        f.write(json.dumps(ledger, indent=1, sort_keys=True))
    fileio.rename(tmp, path, overwrite=True)


class AtomicPusherExecutor(pusher_executor.Executor):
    """Pusher executor: blessing check, then :func:`tfcascade.serving.export.publish_version`."""

    def Do(  # noqa: N802  (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        from tfcascade.serving.export import publish_version

        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise ValueError(
                "AtomicPusher needs push_destination.filesystem, got push_destination="
                f"{destination}"
            )
        serving_dir, model_name = split_base_directory(destination.filesystem.base_directory)
        model_root = os.path.join(serving_dir, model_name)
        model_path = self.GetModelPath(input_dict)

        ledger = _read_ledger(model_root)
        version = ledger.get(model_path)
        serving_path = os.path.join(model_root, version) if version else None
        if serving_path and fileio.exists(serving_path):
            logging.info("Model %s was already pushed to %s.", model_path, serving_path)
        else:
            serving_path = str(publish_version(model_path, serving_dir, model_name))
            version = os.path.basename(serving_path.rstrip("/"))
            ledger[model_path] = version
            _write_ledger(model_root, ledger)
            logging.info("Model %s published to %s.", model_path, serving_path)
        # The PushedModel artifact records where the model went; the model itself stays in the
        # Trainer's artifact (no second copy).
        fileio.makedirs(model_push.uri)
        with fileio.open(os.path.join(model_push.uri, "pushed.json"), "w") as f:
            f.write(json.dumps({"model": model_path, "destination": serving_path,
                                "version": version}))
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)


class AtomicPusher(pusher_component.Pusher):
    """TFX ``Pusher`` whose executor publishes numeric versions atomically (module docstring)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPusherExecutor)


def push_destination(serving_dir: str, model_name: str) -> pusher_pb2.PushDestination:
    """The ``PushDestination`` for ``<serving_dir>/<model_name>/<version>/``."""
    if not model_name or "/" in model_name:
        raise ValueError(f"model_name must be a plain folder name, got model_name={model_name!r}")
    return pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=os.path.join(serving_dir, model_name)
        )
    )
