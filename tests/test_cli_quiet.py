"""TensorFlow's C++ start-up lines stay off the CLI's terminal; other output gets through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tfcascade.cli.quiet import NOISE

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import sys, tensorflow as tf; print(int(tf.constant(2) + 1)); print('own line', file=sys.stderr)"


def _stderr(code: str, **env_extra) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_installed_filter_hides_only_the_start_up_noise():
    plain = _stderr(PROBE)
    quiet = _stderr("from tfcascade.cli.quiet import install; install(); " + PROBE)
    assert quiet == ["own line"]
    assert any(NOISE.match(line) for line in plain), plain  # there was noise to hide


def test_a_user_who_sets_the_log_level_keeps_the_logs():
    kept = _stderr("from tfcascade.cli.quiet import install; install(); " + PROBE, TF_CPP_MIN_LOG_LEVEL="0")
    assert any(NOISE.match(line) for line in kept)


def test_a_user_who_asks_for_fewer_logs_gets_no_start_up_lines():
    # The start-up lines ignore TF_CPP_MIN_LOG_LEVEL: a user's 3 must not let them through.
    quiet = _stderr("from tfcascade.cli.quiet import install; install(); " + PROBE, TF_CPP_MIN_LOG_LEVEL="3")
    assert quiet == ["own line"]


def test_lines_written_during_the_import_that_are_not_noise_are_written_back(capfd):
    from tfcascade.cli.quiet import filtered_stderr

    with filtered_stderr():
        os.write(2, b"I0000 00:00:1.5 7 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"a real error\n")
    assert capfd.readouterr().err == "a real error\n"


def test_library_warnings_are_off_and_their_errors_on():
    code = ("import logging; logging.basicConfig(); from tfcascade.cli.quiet import install; install(); "
            "logging.getLogger('absl').warning('absl chatter'); logging.getLogger('tensorflow').warning('tf chatter'); "
            "logging.getLogger('absl').error('absl error'); logging.getLogger('tfcascade').warning('own warning')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert "chatter" not in out.stderr and "absl error" in out.stderr and "own warning" in out.stderr, out.stderr
