"""Config keys are checked before compilation: typos name the nearest valid key."""

import ml_collections
import pytest

from data_pipelines.config import data_config
from experiments import base_config
from gram_jax.config.defaults import trainer_defaults
from gram_jax.config.validation import ConfigError, reference_config, validate_config
from gram_jax.losses import LOSSES
from gram_jax.losses.batch import check_loss_options, loss_options


def _reference():
    reference = trainer_defaults()
    reference.data = data_config()
    return reference


def _config(**changes):
    # An unlocked copy (data_config() returns a locked ConfigDict), as a config file builds one.
    config = ml_collections.ConfigDict(_reference().to_dict())
    config.update_from_flattened_dict(changes)
    return config


def test_defaults_pass():
    validate_config(_config(), _reference())


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (
            "optim.learning_rate",
            1e-4,
            "config.optim.learning_rate: unknown key; did you mean 'optim.lr",
        ),
        ("optim.weigth_decay", 0.1, "did you mean 'optim.weight_decay'"),
        ("schedule.warmup_fracton", 0.2, "did you mean 'schedule.warmup_fraction'"),
        ("total_step", 10, "config.total_step: unknown key; did you mean 'total_steps'"),
        ("loss.matching_wieght", 0.2, "did you mean 'loss.matching_weight'"),
        ("data.batchsize", 8, "did you mean 'data.batch_size'"),
        ("chekpoint_steps", 3, "did you mean 'checkpoint_steps'"),
    ],
)
def test_typo_names_the_nearest_key(key, value, expected):
    config = _config(**{key: value})
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        validate_config(config, _reference())


def test_wrong_type_is_named():
    config = _config()
    with config.ignore_type():
        config.total_steps = "ten"
    with pytest.raises(ConfigError, match="config.total_steps: expected a int"):
        validate_config(config, _reference())


def test_open_sections_accept_user_names_but_check_their_shape():
    config = _config()
    config.optim.lr_groups.audio = dict(pattern="audio", lr=1e-5)
    config.evals.msrvtt = dict(type="retrieval", split="test")
    validate_config(config, _reference())
    config.data.annotations.val = "/data/msrvtt/val.json"  # split names are free too
    validate_config(config, _reference())
    config.optim.lr_groups.text = dict(pattern="text", learning_rate=1e-5)
    with pytest.raises(ConfigError, match="lr_groups.text: expected exactly the keys"):
        validate_config(config, _reference())


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("loss.gather_mode", "globl", r"config.loss.gather_mode: must be one of \('global'"),
        ("total_steps", 0, r"config.total_steps: must be an int in \[1, inf\), got 0"),
        ("loss.matching_weight", -0.1, r"matching_weight: must be a number in \[0, inf\)"),
    ],
)
def test_bad_values_are_named(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_config(_config(**{key: value}), _reference())


def test_full_reference_includes_model_and_data_sections():
    reference = reference_config()
    assert {"model", "data", "loss", "optim", "schedule", "mesh"} <= set(reference)


def test_base_config_and_runlocal_validate():
    full = base_config.get_config()
    validate_config(full)
    assert full.model.size == "base" and full.model.dtype == "bfloat16"
    local = base_config.get_config("runlocal")
    validate_config(local)
    assert local.model.size == "tiny" and local.data.batch_size == 4
    with pytest.raises(ValueError, match="unknown argument 'fast'"):
        base_config.get_config("fast")


def test_loss_options_is_open_and_reaches_the_loss_as_keywords():
    config = base_config.get_config()
    config.loss.name = "symile"
    config.loss.options = dict(negative_sampling="n_squared")
    validate_config(config)  # user-chosen keys inside loss.options are not key-checked
    assert loss_options(config.loss) == {"negative_sampling": "n_squared"}
    check_loss_options(config.loss, LOSSES["symile"])
    config.loss.options = dict(negative_samplin="n")  # a typo must not vanish into **kwargs
    with pytest.raises(ValueError, match="negative_samplin"):
        check_loss_options(config.loss, LOSSES["symile"])
