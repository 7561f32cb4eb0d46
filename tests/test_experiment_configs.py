"""Every paper and ablation config loads, validates, and trains under ``runlocal``.

Three levels, so the whole file stays inside the CI budget on 2 cores (compiling one tiny train
step costs ~40 s of CPU there):
- every (config, argument) pair loads with and without ``runlocal`` and passes the trainer's
  config validation;
- every distinct runlocal training set-up (model, loss, optimizer, modalities) traces the trainer's
  real jitted train step abstractly (`jax.eval_shape`) on a real batch of the 4 reference clips:
  the model, the configured loss, the matching head and the optimizer all run through;
- one config (the 4-modality T-VAS row, whose subtitles are all missing on the clips) runs 2 real
  steps through `train_and_evaluate`; the other set-ups do so under the ``slow`` marker.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from gram_jax.config_validation import validate_config

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
PAPER_ROWS = {
    "zeroshot_tv": [""],
    "zeroshot_tva": [""],
    "zeroshot_tvas": [""],
    "finetune_tv": ["msrvtt", "didemo", "activitynet", "vatex"],
    "finetune_tva": ["msrvtt", "didemo", "activitynet", "vatex"],
    "finetune_tvas": ["msrvtt", "vatex"],
}
ABLATIONS = ("loss", "modalities", "gather_mode", "temperature", "matching")


def load(relative: str):
    path = EXPERIMENTS / relative
    name = "test_experiment_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def all_cases() -> list[tuple[str, str]]:
    cases = [(f"paper/{row}.py", arg) for row, args in PAPER_ROWS.items() for arg in args]
    for name in ABLATIONS:
        module = load(f"ablations/{name}.py")
        cases += [(f"ablations/{name}.py", v) for v in module.VARIANTS]
    return cases


CASES = all_cases()


def runlocal_config(relative: str, arg: str):
    config = load(relative).get_config(",".join(t for t in (arg, "runlocal") if t))
    # conftest gives 8 CPU devices; the 4 clips split over data=4 (the loss gathers across them).
    config.mesh.update(dict(data=4, fsdp=1, model=2))
    return config


def signature(config) -> str:
    """What the compiled train step depends on under runlocal (data paths aside)."""
    c = config.to_dict()
    return json.dumps(
        [c["model"], c["loss"], c["optim"], c["schedule"], list(config.data.modalities)],
        sort_keys=True,
        default=str,
    )


def distinct_setups() -> list[tuple[str, str]]:
    seen, out = set(), []
    for relative, arg in CASES:
        key = signature(runlocal_config(relative, arg))
        if key not in seen:
            seen.add(key)
            out.append((relative, arg))
    return out


def test_every_paper_row_and_ablation_is_covered():
    files = {p.relative_to(EXPERIMENTS).as_posix() for p in EXPERIMENTS.glob("*/*.py")}
    files -= {"paper/paper_base.py", "ablations/ablation_base.py"}
    files = {f for f in files if f.startswith(("paper/", "ablations/"))}
    assert files == {relative for relative, _ in CASES}


@pytest.mark.parametrize("relative, arg", CASES, ids=[f"{r}:{a}" for r, a in CASES])
def test_config_loads_and_validates(relative, arg):
    module = load(relative)
    full = module.get_config(arg or None)
    validate_config(full)
    doc = module.__doc__
    for needed in ("Command", "python -m gram_jax.main", "Hardware" if "paper" in relative else ""):
        assert needed in doc, (relative, needed)
    local = module.get_config(",".join(t for t in (arg, "runlocal") if t))
    validate_config(local)
    assert local.model.modalities == full.model.modalities
    assert set(local.data.modalities) == set(full.data.modalities)
    assert full.total_steps >= 1000 and local.total_steps <= 4
    assert full.data.batch_size in (32, 64, 128)


def test_paper_numbers_and_step_conversion():
    """The docstrings quote Table 1/2 and the steps follow the reference's formula."""
    base = load("paper/paper_base.py")
    assert base.reference_steps("msrvtt") == 9_000 // 32 * 4 == 1_124
    assert base.reference_steps("vast") == 5_855
    assert base.reference_steps("vatex") == int(25_991 // 64 * 2.5)
    assert "64.0 / 64.8" in load("paper/finetune_tvas.py").__doc__
    assert "54.2 / 50.5" in load("paper/zeroshot_tva.py").__doc__
    zs = load("paper/zeroshot_tvas.py").get_config()
    assert sorted(zs.evals) == ["msrvtt", "vatex"] and zs.data.dataset == "vast"
    assert zs.evals.msrvtt.data.dataset == "msrvtt"
    ft = load("paper/finetune_tva.py").get_config("didemo")
    assert ft.total_steps == 5_200 and ft.data.audio.num_clips == 2
    assert ft.data.text_max_len.text == 70 and ft.data.caption_mode == "first"


@pytest.mark.parametrize(
    "relative, arg, message",
    [
        ("paper/finetune_tvas.py", "didemo", "at most one dataset"),
        ("paper/zeroshot_tv.py", "fast", "unknown argument"),
        ("ablations/loss.py", "clip", "loss ablation"),
        ("ablations/temperature.py", "log,fixed", "temperature ablation"),
    ],
)
def test_bad_arguments_name_the_choices(relative, arg, message):
    with pytest.raises(ValueError, match=message):
        load(relative).get_config(arg)


@pytest.fixture(scope="module")
def real_batches():
    """One real runlocal batch (the 4 reference clips) per data-modality set, decoded once."""
    from data_pipelines.pipeline import make_train_iterator

    cache = {}

    def get(config):
        key = tuple(config.data.modalities)
        if key not in cache:
            it = make_train_iterator(config.data, process_index=0, process_count=1)
            cache[key] = next(it)
        return cache[key]

    return get


SETUPS = distinct_setups()


@pytest.mark.parametrize("relative, arg", SETUPS, ids=[f"{r}:{a}" for r, a in SETUPS])
def test_train_step_traces_on_real_clips(relative, arg, real_batches):
    from gram_jax import parallel
    from gram_jax.train import Trainer

    config = runlocal_config(relative, arg)
    trainer = Trainer(config)
    batch = parallel.global_batch(real_batches(config), trainer.mesh)
    new_state, metrics = jax.eval_shape(trainer.train_step, trainer.abstract_state, batch)
    assert f"loss_{config.loss.name}" in metrics and metrics["loss"].shape == ()
    assert ("loss_matching" in metrics) == (config.loss.matching_weight > 0)
    assert jax.tree.structure(new_state) == jax.tree.structure(trainer.abstract_state)


def two_steps(relative, arg, tmp_path):
    from gram_jax.train import train_and_evaluate

    config = runlocal_config(relative, arg)
    config.total_steps = 2
    config.checkpoint_steps = 2
    state = train_and_evaluate(config, tmp_path)
    assert int(state["step"]) == 2
    for leaf in jax.tree.leaves(state["params"]):
        assert np.isfinite(np.asarray(leaf)).all()


# The real run of the fast tier: the 4-modality paper set-up (T-VAS; zero-shot and fine-tuned rows
# share it under runlocal), which also exercises missing-modality masking and the matching loss.
REAL = next(s for s in SETUPS if "subtitle" in runlocal_config(*s).model.modalities)
SLOW_SETUPS = [s for s in SETUPS if s != REAL]


def test_tvas_setup_runs_two_real_steps(tmp_path):
    two_steps(*REAL, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("relative, arg", SLOW_SETUPS, ids=[f"{r}:{a}" for r, a in SLOW_SETUPS])
def test_every_setup_runs_two_real_steps(relative, arg, tmp_path):
    two_steps(relative, arg, tmp_path)
