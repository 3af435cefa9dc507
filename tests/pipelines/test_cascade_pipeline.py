"""The TFX cascade pipeline: structure, Kubeflow compilation and end-to-end local runs."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

pytest.importorskip("tfx")

from tfcascade.components import trainer_module as tm  # noqa: E402
from tfcascade.models.spec import CascadeSpec  # noqa: E402
from tfcascade.pipelines import cascade_pipeline as cp  # noqa: E402
from tfcascade.training import TrainConfig  # noqa: E402


@pytest.fixture
def raw_dir(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "placeholder.txt").write_text("x")  # only construction: nothing is read
    return str(raw)


def test_pipeline_has_the_components_wired_as_documented(raw_dir, tmp_path):
    pipeline = cp.create_pipeline(data_dir=raw_dir, pipeline_root=str(tmp_path / "root"),
                                  serving_dir=str(tmp_path / "serving"), min_joint_recall=0.3)
    nodes = {c.id: c for c in pipeline.components}
    assert set(nodes) == set(cp.COMPONENT_IDS)
    validator = nodes[cp.VALIDATOR]
    assert validator.exec_properties["min_joint_recall"] == pytest.approx(0.3)
    # No cuts of its own: the validator evaluates the trained model at its spec's.
    assert validator.exec_properties.get("qs") is None and validator.exec_properties.get("k") is None
    # The validator's baseline comes from the LatestBlessedModelStrategy resolver.
    assert validator.inputs["baseline_blessing"].producer_component_id == cp.RESOLVER
    pusher = nodes[cp.PUSHER]
    assert pusher.inputs["model_blessing"].producer_component_id == cp.VALIDATOR
    destination = json.loads(pusher.exec_properties["push_destination"])
    assert destination["filesystem"]["base_directory"] == os.path.join(
        str(tmp_path / "serving"), cp.DEFAULT_MODEL_NAME)
    trainer = nodes[cp.TRAINER]
    config = json.loads(trainer.exec_properties["custom_config"])
    assert config["train"] == TrainConfig().to_dict() and config["spec"] == CascadeSpec.default().get_config()
    assert config["code_fingerprint"] == cp.code_fingerprint()
    assert nodes[cp.EXAMPLE_GEN].exec_properties["stages"] == 2


def test_three_stages_preprocess_and_train_three_stages(raw_dir, tmp_path):
    pipeline = cp.create_pipeline(data_dir=raw_dir, pipeline_root=str(tmp_path / "r"),
                                  serving_dir=str(tmp_path / "s"), spec=CascadeSpec.default(3))
    nodes = {c.id: c for c in pipeline.components}
    assert nodes[cp.EXAMPLE_GEN].exec_properties["stages"] == 3
    assert json.loads(nodes[cp.TRAINER].exec_properties["custom_config"])["spec"]["qs"] == [40, 30, 20]


def test_the_pipelines_spec_and_config_reach_train(raw_dir, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tfcascade import training

    spec = CascadeSpec(("dssm", "tarq", "din"), ("recall", "coarse", "fine"), (25, 12, 6), 5)
    config = TrainConfig(loss="bce", epochs=2, batch_size=32, lr=1e-3, seed=7, steps_per_epoch=3,
                         loss_options={"pos_weight": 2.0})
    pipeline = cp.create_pipeline(data_dir=raw_dir, pipeline_root=str(tmp_path / "r"),
                                  serving_dir=str(tmp_path / "s"), spec=spec, config=config)
    trainer = {c.id: c for c in pipeline.components}[cp.TRAINER]
    assert json.loads(trainer.exec_properties["train_args"])["num_steps"] == 3
    custom_config = json.loads(trainer.exec_properties["custom_config"])  # as TFX stores it
    assert tm.resolve_config(custom_config) == (config, spec)

    called = {}

    class _Stop(Exception):
        pass

    def fake_train(data_dir, model_dir, config, spec, **kwargs):
        called.update(data_dir=data_dir, config=config, spec=spec, **kwargs)
        raise _Stop

    monkeypatch.setattr(training, "train", fake_train)
    split = tmp_path / "Examples" / "1" / "Split-train"
    split.mkdir(parents=True)
    (split / "data.gz").write_text("x")
    fn_args = SimpleNamespace(custom_config=custom_config, train_files=[str(split / "*")],
                              eval_files=[str(split / "*")], serving_model_dir=str(tmp_path / "model" / "Format-Serving"),
                              model_run_dir=str(tmp_path / "run"), train_steps=3)
    with pytest.raises(_Stop):
        tm.run_fn(fn_args)
    assert called["spec"] == spec and called["config"] == config
    assert called["data_dir"] == str(tmp_path / "Examples" / "1")
    # A Trainer wired with TrainArgs only: its num_steps caps the epochs.
    fn_args.custom_config = tm.custom_config(TrainConfig(), CascadeSpec.default())
    with pytest.raises(_Stop):
        tm.run_fn(fn_args)
    assert called["config"].steps_per_epoch == 3 and called["spec"] == CascadeSpec.default()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"spec": 3}, TypeError, "spec must be a CascadeSpec, got spec=3"),
     ({"config": {"epochs": 2}}, TypeError, "config must be a TrainConfig"),
     ({"min_joint_recall": 2.0}, ValueError, "min_joint_recall"),
     ({"model_name": "a/b"}, ValueError, "model_name")],
)
def test_bad_arguments_name_themselves(raw_dir, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        cp.create_pipeline(data_dir=raw_dir, pipeline_root=str(tmp_path / "r"),
                           serving_dir=str(tmp_path / "s"), **kwargs)


def test_kubeflow_spec_compiles(tmp_path):
    pytest.importorskip("kfp.pipeline_spec", reason="compiling needs kfp-pipeline-spec (tfx[kfp])")
    from tfcascade.pipelines.kubeflow_runner import compile_pipeline

    output = tmp_path / "spec" / "pipeline.json"
    spec = compile_pipeline(str(output), image="example.com/tfcascade:1", min_joint_recall=0.4)
    assert json.loads(output.read_text()) == spec  # valid JSON, as written
    pipeline_spec = spec["pipelineSpec"]
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    for node in set(cp.COMPONENT_IDS) - {cp.RESOLVER}:
        assert node in tasks, node
    assert any(t.startswith(cp.RESOLVER) for t in tasks)  # compiled as resolver sub-tasks
    assert set(tasks[cp.PUSHER]["dependentTasks"]) >= {cp.TRAINER, cp.VALIDATOR}
    executors = pipeline_spec["deploymentSpec"]["executors"]
    validator_exec = executors[tasks[cp.VALIDATOR]["componentRef"]["name"] + "_executor"]
    assert validator_exec["container"]["image"] == "example.com/tfcascade:1"
    assert "tfcascade.components.joint_recall_validator.JointRecallValidatorExecutor" in (
        validator_exec["container"]["args"])
    params = tasks[cp.VALIDATOR]["inputs"]["parameters"]
    assert params["min_joint_recall"]["runtimeValue"]["constantValue"]["doubleValue"] == 0.4
    assert json.loads(params["baselines"]["runtimeValue"]["constantValue"]["stringValue"]) == [
        "random", "popularity"]
    # What a KFP v2 cluster runs: the bare PipelineSpec with the root, in a .yaml file.
    from tfcascade.pipelines.kubeflow_runner import write_kfp_package

    package = write_kfp_package(spec, str(tmp_path / "pipeline_spec.yaml"))
    assert json.loads((tmp_path / "pipeline_spec.yaml").read_text()) == package
    assert package["root"] == pipeline_spec["root"]
    assert package["defaultPipelineRoot"] == spec["runtimeConfig"]["gcsOutputDirectory"]
    with pytest.raises(ValueError, match="must be a .yaml or .yml file"):
        write_kfp_package(spec, str(tmp_path / "p.json"))


def _tampered(job: dict, edit) -> dict:
    job = copy.deepcopy(job)
    edit(job["pipelineSpec"])
    return job


def _parameter(spec: dict, task: str, name: str) -> dict:
    return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]


def _set_custom_config(spec: dict, **changes) -> None:
    value = _parameter(spec, cp.TRAINER, "custom_config")
    value["stringValue"] = json.dumps({**json.loads(value["stringValue"]), **changes})


def _set_class_path(spec: dict, executor: str, path: str) -> None:
    args = spec["deploymentSpec"]["executors"][executor]["container"]["args"]
    args[args.index("--executor_class_path") + 1] = path


def test_the_compiled_spec_is_checked_and_each_inconsistency_is_named(tmp_path, monkeypatch):
    pytest.importorskip("kfp.pipeline_spec", reason="compiling needs kfp-pipeline-spec (tfx[kfp])")
    from tfcascade.pipelines.kubeflow_runner import compile_pipeline
    from tfcascade.pipelines.spec_check import check_pipeline_job

    job = compile_pipeline(str(tmp_path / "p.json"), image="example.com/tfcascade:1")
    assert check_pipeline_job(job, "example.com/tfcascade:1") == []
    cases = {
        "images": lambda s: s["deploymentSpec"]["executors"]["Pusher_executor"]["container"].update(image="other:2"),
        "does not resolve": lambda s: _set_class_path(s, "JointRecallValidator_executor",
                                                      "components.joint_recall_validator.JointRecallValidatorExecutor"),
        "run_fn": lambda s: _parameter(s, cp.TRAINER, "run_fn").update(stringValue="pipelines.trainer_module.run_fn"),
        "not a valid TrainConfig": lambda s: _set_custom_config(s, train={"lr": -1}),
        "code_fingerprint": lambda s: _set_custom_config(s, code_fingerprint="0" * 64),
        "do not fit the Trainer's spec": lambda s: s["root"]["dag"]["tasks"][cp.VALIDATOR]["inputs"][
            "parameters"].update(k={"runtimeValue": {"constantValue": {"intValue": "25"}}}),
        "is not in [0, 1]": lambda s: _parameter(s, cp.VALIDATOR, "tolerance").update(doubleValue=1.5),
    }
    for expected, edit in cases.items():
        problems = check_pipeline_job(_tampered(job, edit), "example.com/tfcascade:1")
        assert len(problems) == 1 and expected in problems[0], (expected, problems)
    assert "every step must run image='example.com/tfcascade:2'" in check_pipeline_job(job, "example.com/tfcascade:2")[0]
    from tfcascade.pipelines import spec_check

    monkeypatch.setattr(spec_check, "code_fingerprint", lambda: "f" * 64)  # the image's code differs
    with pytest.raises(ValueError, match="inconsistent .1 problems.*code_fingerprint"):
        compile_pipeline(str(tmp_path / "q.json"), image="example.com/tfcascade:1")
    assert not (tmp_path / "q.json").exists()


def test_trainer_module_finds_the_examples_root_and_checks_its_config():
    assert tm._split_root(["/a/Examples/7/Split-train/*"], "train") == "/a/Examples/7"
    with pytest.raises(ValueError, match="Split-train"):
        tm._split_root(["/a/Examples/7/train/*"], "train")
    config, spec = tm.resolve_config({"train": {"loss": "bce", "epochs": 2}, "code_fingerprint": "abc"})
    assert config == TrainConfig(loss="bce", epochs=2) and spec == CascadeSpec.default()
    assert tm.resolve_config(None) == (TrainConfig(), CascadeSpec.default())
    with pytest.raises(ValueError, match="unknown Trainer custom_config key 'loss'"):
        tm.resolve_config({"loss": "bce"})
    with pytest.raises(ValueError, match="unknown training option 'learning_rate'"):
        tm.resolve_config({"train": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="qs needs one value per stage"):
        tm.resolve_config({"spec": {**CascadeSpec.default().get_config(), "qs": [30]}})
    assert tm.cascade_model_dir("/m/3") == os.path.join("/m/3", tm.CASCADE_MODEL_DIR)


def test_code_fingerprint_ignores_the_cli_but_not_training_code(tmp_path, monkeypatch):
    for rel in ("tfcascade/cli/x.py", "tfcascade/training.py", "tfcascade/components/trainer_module.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a = 1\n")
    monkeypatch.setattr(cp, "_REPO_ROOT", tmp_path)
    before = cp.code_fingerprint()
    (tmp_path / "tfcascade/cli/x.py").write_text("a = 2\n")
    assert cp.code_fingerprint() == before
    (tmp_path / "tfcascade/training.py").write_text("a = 2\n")
    assert cp.code_fingerprint() != before


def _summary(**kwargs):
    from tfcascade.pipelines.local_runner import RunSummary

    base = dict(pipeline_root="/r", run_id="run-1", node_states={cp.TRAINER: "CACHED"},
                joint_recall=0.61, min_joint_recall=0.5, baseline_joint_recall=None,
                blessed=True)
    return RunSummary(**{**base, **kwargs})


def test_cli_summary_tells_where_and_how_to_serve():
    from tfcascade.cli.pipeline import format_summary

    text = format_summary(_summary(pushed=True, pushed_destination="/s/cascade/3",
                                   pushed_version="3"), "/s", "cascade")
    assert "0.6100" in text and "threshold 0.5000" in text and "none yet" in text
    naive = format_summary(_summary(min_joint_recall=None, margin=0.005,
                                    naive_joint_recalls={"random": 0.1, "popularity": 0.3}), "/s", "cascade")
    assert ("(naive rankers to beat by > 0.0050: random 0.1000, popularity 0.3000; latest blessed none yet)"
            in naive)
    assert "blessed:          yes" in text and "/s/cascade/3 (version 3)" in text
    assert "docker compose" in text and "v1/models/cascade:predict" in text
    assert "Trainer" in text and "CACHED" in text


def test_cli_summary_of_a_refused_model_says_why():
    from tfcascade.cli.pipeline import format_summary

    text = format_summary(_summary(blessed=False, joint_recall=0.4, baseline_joint_recall=0.7,
                                   reasons=["joint recall 0.4000 is below the threshold"]),
                          "/s", "cascade")
    assert "blessed:          no" in text and "below the threshold" in text
    assert "pushed:           no (/s/cascade unchanged)" in text and "docker" not in text


def test_cli_parses_the_documented_commands():
    from tfcascade.cli.main import build_parser

    parser = build_parser(["pipeline"])
    args = parser.parse_args(["pipeline", "run", "--preset", "tiny", "--pipeline-root", "p",
                              "--serving-dir", "s", "--min-joint-recall", "0.4", "--loss",
                              "bce", "--stages", "3", "--epochs", "2"])
    assert (args.preset, args.min_joint_recall, args.loss, args.stages, args.epochs) == (
        "tiny", 0.4, "bce", 3, 2)
    from tfcascade.cli.main import UsageError
    from tfcascade.cli.pipeline import _config
    from tfcascade.cli.train import spec_from_args

    assert spec_from_args(args) == CascadeSpec.default(3)
    assert _config(args) == TrainConfig(loss="bce", epochs=2)
    args = parser.parse_args(["pipeline", "run", "--pipeline-root", "p", "--serving-dir", "s", "--qs", "25,12",
                              "--k", "5", "--train-steps", "-1"])
    assert spec_from_args(args) == CascadeSpec.default(2, qs=(25, 12), k=5)
    with pytest.raises(UsageError, match="^--train-steps: steps_per_epoch must be an integer > 0"):
        _config(args, steps_per_epoch=args.train_steps)
    args = parser.parse_args(["pipeline", "compile", "--kubeflow", "--output", "x.json"])
    assert args.kubeflow and args.output == "x.json"
    with pytest.raises(SystemExit):
        parser.parse_args(["pipeline", "run", "--stages", "4", "--pipeline-root", "p",
                           "--serving-dir", "s"])


# ---- end to end on the tiny preset (LocalDagRunner, SQLite ML Metadata) ----------------------

def test_cli_blessing_options_reach_the_pipeline_and_bad_ones_are_usage_errors():
    from tfcascade.cli.main import UsageError, build_parser
    from tfcascade.cli.pipeline import blessing_kwargs

    parser = build_parser(["pipeline"])
    base = ["pipeline", "run", "--pipeline-root", "p", "--serving-dir", "s"]
    assert blessing_kwargs(parser.parse_args(base)) == {}  # the pipeline's defaults
    args = parser.parse_args(base + ["--baselines", "popularity", "--margin", "0.02", "--min-joint-recall", "0.1"])
    assert blessing_kwargs(args) == {"baselines": ("popularity",), "margin": 0.02, "min_joint_recall": 0.1}
    assert blessing_kwargs(parser.parse_args(base + ["--baselines", "none"])) == {"baselines": ()}
    compile_args = parser.parse_args(["pipeline", "compile", "--kubeflow", "--output", "p.json",
                                      "--kfp-package", "spec.json"])
    from tfcascade.cli.pipeline import _compile

    with pytest.raises(UsageError, match=r"^--kfp-package: a KFP package must be a \.yaml or \.yml file"):
        _compile(compile_args)  # refused before compiling
    for bad, message in ((["--baselines", "random,ctr"], "--baselines: ctr is not a naive ranker"),
                         (["--margin", "-0.1"], "--margin: margin must be a finite number in [0, 1]"),
                         (["--tolerance", "2"], "--tolerance: tolerance must be")):
        with pytest.raises(UsageError, match=re.escape(message)):
            blessing_kwargs(parser.parse_args(base + bad))


def _tree(folder):
    """Relative path -> (size, mtime) of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            out[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return out


PIPELINE_SPEC = CascadeSpec.default(2, qs=(25, 12), k=5)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Three runs in one pipeline root: fresh, unchanged (cache), unreachable threshold."""
    for module in ("tfcascade.beam.preprocess", "tfcascade.training", "tfcascade.serving.export"):
        pytest.importorskip(module)
    from tfcascade.data import simulate
    from tfcascade.pipelines.local_runner import run_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    raw = root / "raw"
    simulate(str(raw), preset="tiny", seed=0)
    serving = root / "serving"
    # Other cuts than the defaults: they must reach the trained model, the validator and serving.
    common = dict(data_dir=str(raw), pipeline_root=str(root / "root"), serving_dir=str(serving),
                  spec=PIPELINE_SPEC, config=TrainConfig(epochs=1, batch_size=32), eval_batch_size=64,
                  baselines=())
    runs = {"serving": serving, "root": root / "root"}
    runs["first"] = run_pipeline(**common)
    runs["after_first"] = _tree(serving)
    runs["second"] = run_pipeline(**common)
    runs["after_second"] = _tree(serving)
    # The default rule (beat the naive rankers) and an absolute bar out of reach.
    third = {key: value for key, value in common.items() if key != "baselines"}
    runs["third"] = run_pipeline(**third, min_joint_recall=1.0)
    runs["after_third"] = _tree(serving)
    return runs


@pytest.mark.slow
def test_first_run_blesses_and_pushes_a_numeric_version(tiny_runs):
    first = tiny_runs["first"]
    assert set(first.node_states.values()) == {"COMPLETE"}, first.node_states
    assert first.blessed and first.pushed
    assert 0.0 <= first.joint_recall <= 1.0
    assert first.baseline_joint_recall is None  # nothing was blessed before
    version_dir = tiny_runs["serving"] / cp.DEFAULT_MODEL_NAME / first.pushed_version
    assert first.pushed_version.isdigit()
    assert os.path.samefile(first.pushed_destination, version_dir)
    assert (version_dir / "saved_model.pb").exists()
    metrics = json.loads(open(first.metrics_path).read())
    assert metrics["overall"]["joint_recall"] == pytest.approx(first.joint_recall)
    assert set(metrics["slices"]) == {"age", "gender"}
    # The pipeline's spec reached train(): the trained model's config and the validator's cuts.
    from tfcascade.components.trainer_module import cascade_model_dir

    model_config = json.loads(open(os.path.join(cascade_model_dir(metrics["model"]["uri"]), "config.json")).read())
    assert model_config["spec"] == PIPELINE_SPEC.get_config()
    assert (metrics["qs"], metrics["k"]) == ([25, 12], 5)
    per_age = metrics["slices"]["age"].values()
    assert sum(s["num_requests"] for s in per_age) == metrics["overall"]["num_requests"]


@pytest.mark.slow
def test_second_run_reuses_cached_components(tiny_runs):
    second = tiny_runs["second"]
    for node in (cp.EXAMPLE_GEN, cp.STATISTICS_GEN, cp.SCHEMA_GEN, cp.EXAMPLE_VALIDATOR,
                 cp.TRAINER):
        assert second.node_states[node] == "CACHED", second.node_states
    # Same model: blessed again against itself as baseline, and not published a second time.
    assert second.blessed and second.baseline_joint_recall == pytest.approx(
        tiny_runs["first"].joint_recall)
    assert second.pushed_version == tiny_runs["first"].pushed_version
    assert tiny_runs["after_second"] == tiny_runs["after_first"]


@pytest.mark.slow
def test_model_below_the_threshold_is_not_pushed(tiny_runs):
    third = tiny_runs["third"]
    assert third.joint_recall < 1.0  # precondition: the threshold is out of reach
    assert third.node_states[cp.TRAINER] == "CACHED"
    assert third.blessed is False and not third.pushed
    assert any("min_joint_recall" in reason for reason in third.reasons)
    # The naive rankers were scored on the same eval split and each gates the blessing.
    naive = third.naive_joint_recalls
    assert set(naive) == {"random", "popularity"} and third.margin == pytest.approx(0.005)
    for name, value in naive.items():
        beaten = third.joint_recall > value + third.margin
        assert beaten != any(f"the {name} ranker's" in reason for reason in third.reasons), (name, naive)
    metrics = json.loads(open(third.metrics_path).read())
    assert metrics["overall"]["baselines"] == pytest.approx(naive)
    assert tiny_runs["after_third"] == tiny_runs["after_second"]  # serving folder unchanged


@pytest.mark.slow
def test_pushed_model_serves_the_in_memory_models_top_k(tiny_runs):
    import numpy as np
    import tensorflow as tf

    from tfcascade import training
    from tfcascade.components.trainer_module import cascade_model_dir

    first = tiny_runs["first"]
    from tensorflow_serving.apis import prediction_log_pb2

    loaded = tf.saved_model.load(first.pushed_destination)
    assert {"serving_default", "recommend"} <= set(loaded.signatures)
    # The Pusher's model ships warmup requests for every signature.
    warmup = os.path.join(first.pushed_destination, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == set(loaded.signatures)
    metrics = json.loads(open(first.metrics_path).read())
    model = training.load_model(cascade_model_dir(metrics["model"]["uri"]))
    expected, got = _top_k_both_ways(model, loaded.signatures["serving_default"], metrics)
    np.testing.assert_array_equal(got, expected)


def _vocab(examples_uri, feature):
    """Index -> raw value; index 0 is padding / unknown (tfcascade.features)."""
    from tfcascade.features import HISTORY_TO_ITEM

    path = os.path.join(examples_uri, "vocab", f"{HISTORY_TO_ITEM.get(feature, feature)}.txt")
    with open(path) as f:
        return [""] + [line.rstrip("\n") for line in f]


def _first_top_k(outputs, batch, k):
    """The first [B, k] array among a model's outputs (dict, tuple or tensor)."""
    import numpy as np

    values = outputs.values() if isinstance(outputs, dict) else (
        outputs if isinstance(outputs, (list, tuple)) else [outputs])
    for value in values:
        array = np.asarray(value)
        if array.shape == (batch, k):
            return array
    raise AssertionError(f"no [{batch}, {k}] output in {outputs!r}")


def _top_k_both_ways(model, serving_fn, metrics):
    """Top-K of a few eval requests from the in-memory cascade and from the served SavedModel.

    The served model takes raw ids: the eval examples' vocabulary indices are mapped back to raw
    values with the artifact's vocabularies. Positions from the in-memory model are mapped to
    raw video ids when the served model answers with ids.
    """
    import glob

    import numpy as np
    import tensorflow as tf

    from tfcascade.data import make_dataset

    model_root = os.path.dirname(os.path.dirname(metrics["model"]["uri"]))
    examples_uri = sorted(glob.glob(os.path.join(os.path.dirname(model_root), cp.EXAMPLE_GEN,
                                                 "examples", "*")), key=os.path.getmtime)[-1]
    files = sorted(glob.glob(os.path.join(examples_uri, "Split-eval", "*")))
    features = next(iter(make_dataset(files, batch_size=4, shuffle=False)))
    batch, k, qs = int(features["mask"].shape[0]), metrics["k"], metrics["qs"]
    expected = _first_top_k(model.select(features, qs), batch, k)

    from tfcascade.data import load_vocabularies
    from tfcascade.serving.export import raw_from_indices

    # Raw ids start at 0 in the RecFlow format: index 0 (padding / unknown) maps to the padding
    # and unknown raw ids, not to raw id 0.
    _, signature = serving_fn.structured_input_signature
    ids = raw_from_indices({k: np.asarray(v) for k, v in features.items()}, load_vocabularies(examples_uri))
    raw = {name: tf.constant(ids[name], dtype=spec.dtype) for name, spec in signature.items()}
    outputs = serving_fn(**raw)
    got = (np.asarray(outputs["top_k_indices"]) if "top_k_indices" in outputs
           else _first_top_k(outputs, batch, k))
    if got.dtype.kind in "SOU":  # served model answers with raw video ids
        video = np.asarray(_vocab(examples_uri, "video_id"), dtype=object)
        ids = video[np.asarray(features["video_id"])]
        expected = np.take_along_axis(ids, expected.astype(np.int64), axis=1).astype(str)
        got = np.char.decode(got.astype(bytes)) if got.dtype.kind in "SO" else got
    return expected, got
