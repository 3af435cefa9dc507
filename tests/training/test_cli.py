"""``tfcascade train / evaluate / compare`` end to end through the CLI entry point."""

import json

import pytest

from tfcascade.cli.main import main


@pytest.mark.slow
def test_train_evaluate_compare_cli(tiny_data, tmp_path, capsys):
    model_dir = tmp_path / "m"
    assert main(["train", "--data", str(tiny_data), "--loss", "bce", "--stages", "2", "--batch-size", "64",
                 "--steps-per-epoch", "2", "--seed", "1", "--stage-models", "dssm,mlp", "--sampled-negatives", "8",
                 "--model-dir", str(model_dir)]) == 0
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["steps"] == 2 and trained["loss"] == "bce" and trained["seed"] == 1
    assert trained["stage_models"] == ["dssm", "mlp"] and trained["sampled_negatives"] == 8
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
