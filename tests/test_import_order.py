"""Which Keras tfcascade runs on, whatever the program imported first (``tfcascade._backend``),
and that importing it loads no TFX or Beam. Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REPORT = """
import json, sys, tfcascade
from tfcascade.layers import DFTopK
import tensorflow as tf
out = {"backend": tfcascade.keras_version(), "layer_base": DFTopK.__mro__[2].__module__.split(".")[0],
       "shape": list(DFTopK(k=2)(tf.constant([[3., 1., 2., 0.]])).shape)}
try:
    import tfcascade.models
    out["models"] = "ok"
except ImportError as err:
    out["models"] = str(err)
out["tf_keras_bound_to"] = tf.keras.__name__.split(".")[0]
out["tfx_or_beam"] = [m for m in ("tfx", "apache_beam") if m in sys.modules]
print(json.dumps(out))
"""


def _run(prelude: str, env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", prelude + "\n" + REPORT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("prelude", ["", "import tensorflow as tf", "import tensorflow as tf; import numpy"])
def test_tf_keras_whether_tensorflow_was_imported_first_or_not(prelude):
    out = _run(prelude)
    assert out["backend"] == "tf_keras" and out["tf_keras_bound_to"] == "tf_keras"
    assert out["layer_base"] == "tf_keras" and out["shape"] == [1, 4]
    assert out["models"] == "ok" and out["tfx_or_beam"] == []


def test_keras_3_program_gets_keras_3_layers_and_a_clear_refusal_of_the_models():
    out = _run("import keras")
    assert out["backend"] == "keras_3" and out["layer_base"] == "keras" and out["shape"] == [1, 4]
    assert "needs Keras 2" in out["models"] and "TF_USE_LEGACY_KERAS=1" in out["models"]
    assert "keras (3) was imported before tensorflow" in out["models"]


def test_tf_keras_already_bound_to_keras_3_is_followed_and_named():
    out = _run("import tensorflow as tf; tf.keras.layers")
    assert out["backend"] == "keras_3" and out["tf_keras_bound_to"] == "keras"
    assert "tf.keras is already bound to Keras 3" in out["models"]


@pytest.mark.parametrize(("flag", "backend"), [("1", "tf_keras"), ("0", "keras_3")])
def test_the_environment_variable_decides_when_set(flag, backend):
    out = _run("import keras" if flag == "1" else "", {"TF_USE_LEGACY_KERAS": flag})
    assert out["backend"] == backend


def test_import_tfcascade_imports_neither_tensorflow_nor_keras():
    code = "import sys, tfcascade; print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
