"""AtomicPusher: pushes only blessed models, to numeric versions, once per model."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("tfx")
pytest.importorskip("tfcascade.serving.export")

from tfx.types import standard_artifacts  # noqa: E402

from tfcascade.components import atomic_pusher as ap  # noqa: E402


def _tree(folder):
    """Relative path -> bytes of every file under ``folder`` (empty if it does not exist)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _model(tmp_path, name, artifact_id):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / name)
    model.id = artifact_id
    serving = tmp_path / name / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(f"graph of {name}".encode())
    (serving / "variables" / "variables.index").write_bytes(b"index")
    return model


def _push(tmp_path, model, blessed, serving_dir):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f"pushed-{model.id}-{blessed}")
    destination = ap.push_destination(str(serving_dir), "cascade")
    from google.protobuf import json_format

    props = {"push_destination": json_format.MessageToJson(destination), "custom_config": "null"}
    ap.AtomicPusherExecutor().Do({"model": [model], "model_blessing": [blessing]},
                                 {"pushed_model": [pushed]}, props)
    return pushed


def test_unblessed_model_leaves_serving_untouched(tmp_path):
    serving = tmp_path / "serving"
    pushed = _push(tmp_path, _model(tmp_path, "m1", 1), blessed=False, serving_dir=serving)
    assert pushed.get_int_custom_property("pushed") == 0
    assert _tree(serving) == {}


def test_blessed_models_get_increasing_numeric_versions(tmp_path):
    serving = tmp_path / "serving"
    first = _push(tmp_path, _model(tmp_path, "m1", 1), blessed=True, serving_dir=serving)
    second = _push(tmp_path, _model(tmp_path, "m2", 2), blessed=True, serving_dir=serving)
    assert first.get_int_custom_property("pushed") == 1
    v1 = first.get_string_custom_property("pushed_version")
    v2 = second.get_string_custom_property("pushed_version")
    assert v1.isdigit() and v2.isdigit() and int(v2) > int(v1)
    dest = first.get_string_custom_property("pushed_destination")
    assert dest == os.path.join(str(serving), "cascade", v1)
    assert _tree(dest) == _tree(tmp_path / "m1" / "Format-Serving")  # a complete copy
    versions = sorted(d for d in os.listdir(serving / "cascade") if not d.startswith("."))
    assert versions == sorted([v1, v2])  # no temporary folder left behind


def test_same_model_is_not_published_twice(tmp_path):
    serving = tmp_path / "serving"
    model = _model(tmp_path, "m1", 1)
    first = _push(tmp_path, model, blessed=True, serving_dir=serving)
    before = _tree(serving)
    again = _push(tmp_path, model, blessed=True, serving_dir=serving)
    assert _tree(serving) == before
    assert again.get_string_custom_property("pushed_version") == (
        first.get_string_custom_property("pushed_version"))
    ledger = json.loads((serving / "cascade" / ap.PUSH_LEDGER).read_text())
    assert list(ledger.values()) == [first.get_string_custom_property("pushed_version")]


@pytest.mark.parametrize("base", ["cascade", "/", ""])
def test_destination_must_name_a_model_folder(base):
    with pytest.raises(ValueError, match="base_directory"):
        ap.split_base_directory(base)


def test_model_name_must_be_a_folder_name(tmp_path):
    with pytest.raises(ValueError, match="model_name"):
        ap.push_destination(str(tmp_path), "a/b")
