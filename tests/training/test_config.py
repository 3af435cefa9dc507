"""TrainConfig: defaults, validation messages, the dict round trip, the keyword form, run identity."""

import dataclasses
import json

import pytest

from tfcascade.models.spec import CascadeSpec
from tfcascade.training import TrainConfig
from tfcascade.training.config import resolve
from tfcascade.training.run_state import run_identity


def test_defaults_are_the_reference_setup_and_frozen():
    config = TrainConfig()
    assert (config.loss, config.epochs, config.batch_size, config.lr, config.seed) == ("lcron", 1, 1024, 1e-2, 0)
    assert config.adam_epsilon == 1e-8  # PyTorch's, as the reference code trains with
    assert config.loss_options == {} and config.steps_per_epoch is None and config.backup_every == "epoch"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


def test_dict_round_trip_is_json_and_temperature_joins_the_loss_options():
    config = TrainConfig(loss="dftopk", loss_options={"temperature": 2.0}, epochs=3, batch_size=64, lr=1e-3, seed=4,
                         steps_per_epoch=7, sampled_negatives=8, negative_draw="slots", backup_every=5,
                         codebook_reset_every=9, initialization="keras", adam_epsilon=1e-7)
    options = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(options) == config
    assert TrainConfig.from_dict({"loss": "lcron", "temperature": 50}).loss_options == {"temperature": 50.0}
    assert TrainConfig.from_dict({"loss_options": {"e2e_qs": [30, 20]}, "temperature": 5}).loss_options == {
        "e2e_qs": [30, 20], "temperature": 5.0}
    assert TrainConfig.from_dict({"temperature": None}) == TrainConfig()
    with pytest.raises(ValueError, match=r"unknown training option 'learning_rate' \(value 0.1\); known options: "):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("field, value, message", [
    ("lr", -1.0, "lr must be a finite number > 0, got lr=-1.0"), ("lr", float("nan"), "got lr=nan"),
    ("lr", "fast", "got lr='fast'"), ("lr", True, "got lr=True"),
    ("adam_epsilon", 0.0, "adam_epsilon must be a finite number > 0, got adam_epsilon=0.0"),
    ("adam_epsilon", float("inf"), "got adam_epsilon=inf"),
    ("epochs", 0, "epochs must be an integer > 0, got epochs=0"), ("epochs", 1.5, "got epochs=1.5"),
    ("batch_size", -8, "batch_size=-8"), ("embedding_dim", 0, "embedding_dim=0"),
    ("eval_batch_size", 0, "eval_batch_size=0"), ("steps_per_epoch", 0, "steps_per_epoch=0"),
    ("codebook_reset_every", 0, "codebook_reset_every must be an integer > 0, got codebook_reset_every=0"),
    ("sampled_negatives", -1, "sampled_negatives must be an integer >= 0, got sampled_negatives=-1"),
    ("seed", "0", "seed must be an integer, got seed='0'"),
    ("negative_draw", "pool", "negative_draw must be one of ('items', 'slots'), got negative_draw='pool'"),
    ("initialization", "torch", "initialization must be one of ('reference', 'keras'), got initialization='torch'"),
    ("backup_every", 0, "backup_every must be 'epoch' or an integer > 0, got backup_every=0"),
    ("loss", "bpr", "unknown loss name='bpr'; valid names: bce"),
])
def test_bad_options_are_one_line_errors_naming_the_option(field, value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{field: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_keyword_form_resolves_to_the_two_objects():
    config, spec = resolve(loss="bce", epochs=2, temperature=None, stages=3, stage_models=("dssm", "tarq", "din"))
    assert config == TrainConfig(loss="bce", epochs=2)
    assert spec == CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din"))
    base = TrainConfig(loss="dftopk", batch_size=64)
    assert resolve(base, None, epochs=3) == (dataclasses.replace(base, epochs=3), CascadeSpec.default(2))
    assert resolve(base, CascadeSpec.default(3)) == (base, CascadeSpec.default(3))
    with pytest.raises(ValueError, match="give the cascade's shape as spec or as stages / stage_models, not both"):
        resolve(None, CascadeSpec.default(3), stages=3)
    with pytest.raises(ValueError, match="stage_kinds needs 2 entries"):
        resolve(stage_models=("dssm", "mlp", "din"))


def test_run_identity_is_what_shapes_the_model_and_its_optimisation():
    spec = CascadeSpec.default(2, qs=(25, 15), k=5)
    identity = run_identity(TrainConfig(loss="bce", eval_batch_size=7, backup_every=3), spec, "fp")
    assert identity["loss"] == "bce" and identity["qs"] == [25, 15] and identity["k"] == 5
    assert identity["stage_kinds"] == ["dssm", "din"] and identity["data_fingerprint"] == "fp"
    assert "eval_batch_size" not in identity and "backup_every" not in identity
    assert run_identity(TrainConfig(loss="bce"), spec, "fp") == identity
    assert run_identity(TrainConfig(loss="bce", codebook_reset_every=2), spec, "fp") != identity
