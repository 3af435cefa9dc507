"""CascadeSpec: defaults, validation messages, the config round trip."""

import dataclasses
import json

import pytest

from tfcascade.models.spec import STAGE_CLASSES, CascadeSpec


def test_defaults_are_the_reference_cascades():
    two, three = CascadeSpec.default(), CascadeSpec.default(3)
    assert two == CascadeSpec(("dssm", "din"), ("retrieval", "ranking"), (30, 20), 10) and two.num_stages == 2
    assert three == CascadeSpec(("dssm", "mlp", "din"), ("retrieval", "prerank", "ranking"), (40, 30, 20), 10)
    assert three.num_stages == 3
    tarq = CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din"), qs=(50, 25, 12), k=5)
    assert (tarq.stage_kinds, tarq.stage_names, tarq.qs, tarq.k) == (
        ("dssm", "tarq", "din"), ("retrieval", "prerank", "ranking"), (50, 25, 12), 5)
    assert sorted(STAGE_CLASSES) == ["din", "dssm", "mlp", "tarq"]
    assert all(cls.kind == kind for kind, cls in STAGE_CLASSES.items())


def test_sequences_become_tuples_and_the_spec_is_frozen():
    spec = CascadeSpec(["dssm", "din"], ["a", "b"], [8, 5], 3)
    assert spec == CascadeSpec(("dssm", "din"), ("a", "b"), (8, 5), 3) and isinstance(spec.qs, tuple)
    assert hash(spec) == hash(CascadeSpec(("dssm", "din"), ("a", "b"), (8, 5), 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.k = 4


@pytest.mark.parametrize("fields, message", [
    (dict(stage_kinds=("dssm",)), "stage_kinds must name 2 or 3 stages, got stage_kinds=['dssm']"),
    (dict(stage_kinds=("dssm", "din", "mlp", "din")), "stage_kinds must name 2 or 3 stages"),
    (dict(stage_kinds=("dssm", "transformer")),
     "stage_kinds[1]='transformer' is not a stage kind; known: ['din', 'dssm', 'mlp', 'tarq']"),
    (dict(stage_kinds="dssm,din"), "stage_kinds must be a sequence of strings, got stage_kinds='dssm,din'"),
    (dict(stage_names=("retrieval",)), "stage_names needs one name per stage (2), got stage_names=['retrieval']"),
    (dict(stage_names=("a", "a")), "stage_names must be distinct identifiers, got stage_names=['a', 'a']"),
    (dict(stage_names=("a", "b c")), "stage_names must be distinct identifiers"),
    (dict(qs=(30, 20, 10)), "qs needs one value per stage (2), got qs=[30, 20, 10]"),
    (dict(qs=(20, 30)), "qs must be positive and non-increasing, got qs=[20, 30]"),
    (dict(qs=(30, 0), k=1), "qs must be positive and non-increasing, got qs=[30, 0]"),
    (dict(qs=(30, 20.5)), "qs must be integers, got qs=[30, 20.5]"),
    (dict(k=0), "k must be in 1..20 (the last stage's q), got k=0"),
    (dict(k=21), "k must be in 1..20 (the last stage's q), got k=21"),
    (dict(k=True), "k must be in 1..20 (the last stage's q), got k=True"),
    (dict(k=2.0), "k must be in 1..20 (the last stage's q), got k=2.0"),
])
def test_bad_specs_are_one_line_errors_naming_the_field(fields, message):
    valid = dict(stage_kinds=("dssm", "din"), stage_names=("retrieval", "ranking"), qs=(30, 20), k=10)
    with pytest.raises(ValueError) as err:
        CascadeSpec(**{**valid, **fields})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("args, kwargs, message", [
    ((4,), {}, "stages must be 2 or 3, got stages=4"),
    ((True,), {}, "stages must be 2 or 3, got stages=True"),
    ((2,), {"qs": (40, 30, 20)}, "qs needs 2 entries (stages=2), got qs=(40, 30, 20)"),
    ((3,), {"stage_kinds": ("dssm", "din")}, "stage_kinds needs 3 entries (stages=3), got stage_kinds=('dssm', 'din')"),
    ((2,), {"stage_names": "ab"}, "stage_names needs 2 entries (stages=2), got stage_names='ab'"),
    ((2,), {"k": 25}, "k must be in 1..20 (the last stage's q), got k=25"),
])
def test_default_names_what_does_not_fit(args, kwargs, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        CascadeSpec.default(*args, **kwargs)


def test_config_round_trip_is_json():
    spec = CascadeSpec(("dssm", "tarq", "din"), ("recall", "coarse", "fine"), (50, 25, 12), 6)
    config = spec.get_config()
    assert config == {"stage_kinds": ["dssm", "tarq", "din"], "stage_names": ["recall", "coarse", "fine"],
                      "qs": [50, 25, 12], "k": 6}
    assert CascadeSpec.from_config(json.loads(json.dumps(config))) == spec
    with pytest.raises(ValueError, match=r"unknown CascadeSpec key 'stages' \(value 3\); known keys: "
                                         r"\['stage_kinds', 'stage_names', 'qs', 'k'\]"):
        CascadeSpec.from_config({**config, "stages": 3})
    with pytest.raises(ValueError, match="CascadeSpec config lacks 'k'"):
        CascadeSpec.from_config({key: value for key, value in config.items() if key != "k"})
    with pytest.raises(ValueError, match="k must be in 1..12"):
        CascadeSpec.from_config({**config, "k": 13})
