"""``tfcascade train / evaluate / compare`` end to end through the CLI entry point."""

import json

import pytest

from tfcascade.cli.main import UsageError, main


@pytest.mark.slow
def test_train_evaluate_compare_cli(tiny_data, tmp_path, capsys):
    model_dir = tmp_path / "m"
    assert main(["train", "--data", str(tiny_data), "--loss", "dftopk", "--stages", "2", "--batch-size", "64",
                 "--steps-per-epoch", "2", "--seed", "1", "--stage-models", "dssm,mlp", "--sampled-negatives", "8",
                 "--qs", "25,12", "--k", "5", "--temperature", "3", "--model-dir", str(model_dir)]) == 0
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["steps"] == 2 and trained["loss"] == "dftopk" and trained["seed"] == 1
    assert trained["stage_kinds"] == ["dssm", "mlp"] and trained["sampled_negatives"] == 8
    assert trained["qs"] == [25, 12] and trained["k"] == 5 and trained["loss_options"] == {"temperature": 3.0}
    capsys.readouterr()
    assert main(["evaluate", "--model-dir", str(model_dir), "--data", str(tiny_data)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["joint_recall"] == pytest.approx(trained["joint_recall"])
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(tiny_data), "--losses", "bce,lcron", "--seeds", "1", "--batch-size", "64",
                 "--steps-per-epoch", "1", "--out", str(out)]) == 0
    assert set(json.loads((out / "compare.json").read_text())) == {"bce", "lcron"}
    run = out / "runs" / "bce" / "seed0" / "metrics.json"
    before = run.stat().st_mtime_ns
    assert main(["compare", "--data", str(tiny_data), "--losses", "bce", "--seeds", "1", "--batch-size", "64",
                 "--steps-per-epoch", "1", "--out", str(out)]) == 0
    assert run.stat().st_mtime_ns == before  # resumed: the finished run was read, not retrained
    assert main(["compare", "--data", str(tiny_data), "--losses", "bce", "--seeds", "1", "--batch-size", "64",
                 "--steps-per-epoch", "1", "--no-resume", "--out", str(out)]) == 0
    assert run.stat().st_mtime_ns != before


def test_train_cli_rejects_bad_stage_count(tiny_data, tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tiny_data), "--stages", "4", "--model-dir", str(tmp_path)])


def test_cli_errors_are_one_line_with_exit_codes(tiny_data, tmp_path, capsys):
    cases = [
        (["train", "--data", str(tmp_path / "nonexistent"), "--loss", "bce", "--model-dir", str(tmp_path / "m")], 2,
         f"tfcascade train: error: --data {tmp_path / 'nonexistent'}: no such folder (give the output of "
         "`tfcascade preprocess`)"),
        (["train", "--data", str(tmp_path), "--loss", "bce", "--model-dir", str(tmp_path / "m")], 2,
         "no metadata.json there"),
        (["train", "--data", str(tiny_data), "--lr", "-1", "--model-dir", str(tmp_path / "m")], 2,
         "tfcascade train: error: --lr: lr must be a finite number > 0, got lr=-1.0"),
        (["train", "--data", str(tiny_data), "--lr", "nan", "--model-dir", str(tmp_path / "m")], 2, "got lr=nan"),
        (["train", "--data", str(tiny_data), "--adam-epsilon", "0", "--model-dir", str(tmp_path / "m")], 2,
         "tfcascade train: error: --adam-epsilon: adam_epsilon must be a finite number > 0, got adam_epsilon=0.0"),
        (["train", "--data", str(tiny_data), "--epochs", "0", "--model-dir", str(tmp_path / "m")], 2,
         "--epochs: epochs must be an integer > 0"),
        (["train", "--data", str(tiny_data), "--qs", "20,30", "--model-dir", str(tmp_path / "m")], 2,
         "tfcascade train: error: --qs: qs must be positive and non-increasing, got qs=[20, 30]"),
        (["train", "--data", str(tiny_data), "--k", "25", "--model-dir", str(tmp_path / "m")], 2,
         "--k: k must be in 1..20 (the last stage's q), got k=25"),
        (["train", "--data", str(tiny_data), "--stage-models", "dssm,transformer", "--model-dir", str(tmp_path / "m")],
         2, "--stage-models: stage_kinds[1]='transformer' is not a stage kind"),
        (["train", "--data", str(tiny_data), "--stages", "3", "--stage-models", "dssm,din", "--model-dir",
          str(tmp_path / "m")], 2, "--stage-models: stage_kinds needs 3 entries (stages=3)"),
        (["train", "--data", str(tiny_data), "--loss", "bpr", "--model-dir", str(tmp_path / "m")], 2,
         "tfcascade train: error: unknown loss name='bpr'"),
        (["compare", "--data", str(tiny_data), "--qs", "20,30", "--out", str(tmp_path / "c")], 2,
         "tfcascade compare: error: --qs: qs must be positive"),
        (["evaluate", "--model-dir", str(tmp_path / "none"), "--data", str(tiny_data)], 2,
         "--model-dir " + str(tmp_path / "none") + ": no such folder (give the output of `tfcascade train`)"),
        (["evaluate", "--model-dir", str(tmp_path), "--data", str(tiny_data)], 2, ": no config.json there"),
    ]
    for argv, code, message in cases:
        capsys.readouterr()
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()  # refused before any work
    with pytest.raises(UsageError):  # --debug: the exception itself, traceback included
        main(["--debug", "evaluate", "--model-dir", str(tmp_path / "none"), "--data", str(tiny_data)])
