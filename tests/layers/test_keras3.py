"""The layers and losses in a Keras 3 program (TensorFlow backend), from the same import.

``keras3_program.py`` runs in two fresh interpreters at once: as a Keras 3 program (``keras``
imported first, no ``TF_USE_LEGACY_KERAS``) it builds, fits, saves (``.keras``), reloads and
compares a functional model around every layer, checks each op layer against its op, the losses'
config round trips, a training loop, the streaming metrics and the refusal of
``tfcascade.models``; in both interpreters it computes every cascade loss's value and gradients
on the same float64 inputs, which must agree between Keras 3 and tf_keras.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfcascade.losses import names as loss_names

PROGRAM = Path(__file__).with_name("keras3_program.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def _check_names() -> list[str]:
    """The functions ``keras3_program.py`` registers with ``@check``, read from its source (the
    program imports Keras 3 and must not be imported here)."""
    tree = ast.parse(PROGRAM.read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Name) and d.id == "check" for d in node.decorator_list)]


def _start(mode: str, out: Path) -> subprocess.Popen:
    """The program as a Keras 3 program (``keras`` imported first, no ``TF_USE_LEGACY_KERAS``)
    or under tf_keras (``TF_USE_LEGACY_KERAS=1``)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if mode == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
        command = [sys.executable, str(PROGRAM), str(out)]
    else:
        keras_first = "import keras, runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
        command = [sys.executable, "-c", keras_first, str(PROGRAM), str(out)]
    return subprocess.Popen(command, cwd=out.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """``{"keras_3": ..., "tf_keras": ...}``: the two programs' JSON outputs."""
    folder = tmp_path_factory.mktemp("keras3")
    procs = {mode: _start(mode, folder / f"{mode}.json") for mode in ("keras_3", "tf_keras")}
    results = {}
    for mode, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            pytest.fail(f"the {mode} program ran past {TIMEOUT_S} s")
        if proc.returncode != 0:
            pytest.fail(f"the {mode} program failed (exit {proc.returncode}):\n{output[-4000:]}")
        results[mode] = json.loads((folder / f"{mode}.json").read_text())
    return results


def test_each_program_ran_on_its_keras(runs):
    assert runs["keras_3"]["keras_version"] == "keras_3"
    assert runs["tf_keras"]["keras_version"] == "tf_keras"
    assert set(runs["keras_3"]["checks"]) == set(_check_names())


@pytest.mark.parametrize("check", _check_names())
def test_keras_3(runs, check):
    error = runs["keras_3"]["checks"][check]
    assert error is None, error


@pytest.mark.parametrize("name", loss_names())
def test_loss_has_the_same_value_and_gradients_in_keras_3_and_tf_keras(runs, name):
    k3, k2 = runs["keras_3"]["losses"][name], runs["tf_keras"]["losses"][name]
    assert k3["dtype"] == k2["dtype"] == "float64"
    np.testing.assert_allclose(k3["value"], k2["value"], rtol=1e-12, atol=0)
    for g3, g2 in zip(k3["score_grads"], k2["score_grads"], strict=True):
        np.testing.assert_allclose(np.array(g3), np.array(g2), rtol=1e-12, atol=1e-15)
    assert np.any(np.array(k3["score_grads"]) != 0.0)
    assert k3["weight_grads"].keys() == k2["weight_grads"].keys()
    for key, value in k3["weight_grads"].items():
        assert value == pytest.approx(k2["weight_grads"][key], rel=1e-7), key
