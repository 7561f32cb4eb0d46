"""Issue 14, config probes: every bad value refused before compile; resume compares configs."""

import json
import time

import ml_collections
import pytest

from experiments import base_config
from gram_jax.config import resume as resume_check
from gram_jax.config.schema import rule_for
from gram_jax.config.validation import ConfigError, reference_config, validate_config


def _set(config, key, value):
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    with node.ignore_type():
        node[leaf] = value
    return config


def _runlocal(**changes):
    config = base_config.get_config("runlocal")
    for key, value in changes.items():
        _set(config, key, value)
    return config


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict | dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_numeric_key_has_a_range_rule():
    # The schema is a table, not a list of ifs: a numeric key added without a rule fails here.
    missing = [
        path
        for path, value in _leaves(reference_config())
        if isinstance(value, int | float) and not isinstance(value, bool) and rule_for(path) is None
    ]
    assert not missing, (
        f"numeric config keys without a rule in gram_jax/config/schema.py: {missing}"
    )


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        # The probes of issue 14: each ran (or crashed late) before.
        ("optim.lr", -0.002, r"config.optim.lr: must be a number in \(0, inf\), got -0.002"),
        ("keep_checkpoints", 0, r"config.keep_checkpoints: must be an int in \[1, inf\), got 0"),
        ("log_every", 0, r"config.log_every: must be an int in \[1, inf\), got 0"),
        ("total_steps", 0, r"config.total_steps: must be an int in \[1, inf\)"),
        ("checkpoint_steps", -5, r"config.checkpoint_steps: must be an int in \[1, inf\)"),
        ("data.batch_size", 0, r"config.data.batch_size: must be an int in \[1, inf\)"),
        ("model.text.dropout_rate", 1.0, r"model.text.dropout_rate: must be a number in \[0, 1\)"),
        ("model.vision.drop_path_rate", -0.1, r"drop_path_rate: must be a number in \[0, 1\)"),
        ("loss.label_smoothing", 1.5, r"loss.label_smoothing: must be a number in \[0, 1\)"),
        ("optim.b2", 1.0, r"config.optim.b2: must be a number in \[0, 1\)"),
        ("optim.lr_groups.vision.lr", 0.0, r"optim.lr_groups.vision.lr: must be a number in \(0"),
        ("optim.weight_decay", float("nan"), r"optim.weight_decay: must be a number in \[0, inf\)"),
        ("eval_every", -1, r"config.eval_every: must be an int in \[0, inf\)"),
        ("mesh.data", 0, r"config.mesh.data: must be an int in \[1, inf\) or one of \(-1,\)"),
        ("on_nonfinite", "retry", r"config.on_nonfinite: must be one of \('stop', 'rollback'\)"),
        ("num_epochs", -1, r"config.num_epochs: must be a number in \[0, inf\) or None"),
        ("best_metric", "t2d/R@1", r"config.best_metric='t2d/R@1': expected '<eval name>/"),
    ],
)
def test_bad_values_are_refused_before_compile(tmp_path, key, value, allowed):
    from gram_jax.train import train_and_evaluate

    start = time.perf_counter()
    with pytest.raises(ConfigError, match=allowed):
        train_and_evaluate(_runlocal(**{key: value}), tmp_path)
    # Refused before any model is built or compiled, and before the workdir is touched.
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "config.json").exists()


def test_fractional_and_special_values_that_are_allowed():
    config = _runlocal(**{"mesh.data": -1, "model.text.dropout_rate": 0.0, "num_epochs": 0.5})
    validate_config(config)


def test_num_epochs_derives_total_steps_from_the_samples_kept():
    from gram_jax.config import prepare

    config = _runlocal(num_epochs=3)
    resolved = prepare(config)
    # The 4 reference clips, one caption each, global batch 4: one step per epoch.
    assert resolved.total_steps == 3 and config.total_steps == 4  # the input is not changed
    assert prepare(_runlocal()).total_steps == 4  # num_epochs=None: total_steps


def test_resume_refuses_shape_and_order_keys_and_accepts_optimizer_ones():
    saved = _runlocal()
    new = _runlocal(
        **{"model.embed_dim": 64, "data.seed": 3, "optim.lr": 1e-4, "schedule.warmup_steps": 5}
    )
    refused, accepted = resume_check.compare_configs(json.loads(saved.to_json()), new)
    assert set(refused) == {"model.embed_dim", "data.seed"}
    assert refused["model.embed_dim"] == (saved.model.embed_dim, 64)
    assert set(accepted) == {"optim.lr", "schedule.warmup_steps"}
    # Dropout changes no shape; a new learning-rate group or clipping on/off changes the
    # optimizer-state tree.
    _set(new, "model.text.dropout_rate", 0.0)
    new.optim.lr_groups.audio = dict(pattern="^audio/", lr=1e-5)
    _set(new, "optim.grad_clip_norm", 1.0)
    refused, accepted = resume_check.compare_configs(json.loads(saved.to_json()), new)
    assert "optim.lr_groups.audio.lr" in refused and "optim.grad_clip_norm" in refused
    assert "model.text.dropout_rate" in accepted


def test_a_key_missing_from_an_old_saved_config_counts_as_its_default():
    saved = json.loads(_runlocal().to_json())
    del saved["on_nonfinite"], saved["model"]["temperature"]["init"]
    refused, accepted = resume_check.compare_configs(saved, _runlocal())
    assert not refused and not accepted


def test_changed_embed_dim_is_refused_naming_the_key_before_anything_is_written(tmp_path):
    from gram_jax.train import train_and_evaluate

    # A workdir as a finished run leaves it: a checkpoint with its config, and config.json.
    step_dir = tmp_path / "checkpoints" / "4" / "config"
    step_dir.mkdir(parents=True)
    (step_dir / "metadata").write_text(_runlocal().to_json())
    (tmp_path / "config.json").write_text(_runlocal().to_json())
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(
        resume_check.ResumeConfigError, match=r"model.embed_dim \(saved 512, now 48"
    ):
        train_and_evaluate(_runlocal(**{"model.embed_dim": 48}), tmp_path)
    assert (tmp_path / "config.json").read_text() == before


def test_scratch_start_in_a_workdir_with_metrics_refuses_unless_overwrite(tmp_path):
    from gram_jax.train import train_and_evaluate

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 6, "eval": "reference_clips"}\n')
    with pytest.raises(resume_check.ResumeConfigError, match="--config.overwrite=True"):
        train_and_evaluate(_runlocal(), tmp_path)
    assert metrics.exists() and not (tmp_path / "config.json").exists()
    resume_check.check_fresh_start(_runlocal(overwrite=True), tmp_path)
    assert not metrics.exists()
    (kept,) = tmp_path.glob("metrics.replaced-*.jsonl")  # moved aside, never deleted
    assert '"step": 6' in kept.read_text()


def test_resume_command_replaces_the_learning_rate_in_either_flag_form():
    from gram_jax.train.guard import lower_lr_command

    for argv in (
        ["gram-train", "--config=c.py", "--workdir=W", "--config.optim.lr=0.002"],
        ["gram-train", "--config=c.py", "--workdir=W", "--config.optim.lr", "0.002"],
    ):
        got = lower_lr_command(argv, 0.002)
        assert got == "gram-train --config=c.py --workdir=W --config.optim.lr=0.0002"
    assert "config.optim.lr = 0.0002" in lower_lr_command(None, 0.002)
