"""Keeps TensorFlow's C++ start-up log lines off the terminal of the CLI.

Importing TensorFlow prints lines such as ``I0000 … cudart_stub.cc:31] Could not find cuda
drivers`` and ``oneDNN custom operations are on`` straight to file descriptor 2, before
``TF_CPP_MIN_LOG_LEVEL`` is read, so that variable alone does not hide them. ``install()``
routes fd 2 into a temporary file while TensorFlow is imported (and its devices are listed,
which is when a CPU machine logs the failed ``cuInit``), then writes back every captured line
that is not such start-up noise: a real error during the import is never lost.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

# The lines TensorFlow prints at start-up on a machine without a GPU.
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|cuda_diagnostics)\.cc:"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.")


@contextlib.contextmanager
def filtered_stderr():
    """Captures fd 2 for the ``with`` body, then writes back the lines that are not ``NOISE``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the normal machinery, but runs its import under
    :func:`filtered_stderr` (once: the finder removes itself)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr():
                exec_module(module)
                module.config.list_physical_devices()

        spec.loader.exec_module = quiet_exec_module
        return spec


# Python loggers whose warnings are library chatter at a command line (TFX's artifact notes,
# tf_keras' "not built" serialisation notes); their errors still print.
CHATTY_LOGGERS = ("absl", "tensorflow")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def install() -> None:
    """Hides TensorFlow's start-up lines in this process, unless TensorFlow is imported already
    or the user set ``TF_CPP_MIN_LOG_LEVEL=0`` (then they asked for its logs; a higher level
    they set asks for less, which those lines ignore). Also sets ``TF_CPP_MIN_LOG_LEVEL=2``
    unless the user set it (C++ warnings off; errors still print) and keeps the warnings of
    ``CHATTY_LOGGERS`` off."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in CHATTY_LOGGERS:  # a filter, not a level: absl resets its logger's level when flags parse
        logging.getLogger(name).addFilter(_errors_only)
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
