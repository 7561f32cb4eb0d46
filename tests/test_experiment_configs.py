"""Every paper and ablation config loads, validates, and trains 2 real steps under ``runlocal``.

- every (config, argument) pair loads with and without ``runlocal`` and passes the trainer's
  config validation; the paper docstrings quote the paper's numbers and the step conversion;
- every distinct runlocal training set-up (model, loss, optimizer, schedule, modalities: what the
  compiled train step depends on) runs 2 real steps through `train_and_evaluate` on the 4 real
  reference clips: the model, the configured loss, the matching head (where its weight is > 0)
  and the optimizer all run, the parameters stay finite, and the logged metrics hold exactly the
  loss terms the config names.

Compiling one tiny train step dominates (~20-40 s of CPU on 2 busy cores), so set-ups that compile
the same train step run once, with XLA's backend optimisation off (`FAST_COMPILE`, about half the
compile time), and the runs share JAX's persistent compilation cache (tests/jax_cache.py): the
initialisation and checkpoint-slicing programs of set-ups with the same model are built once.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import struct

import jax
import jax_cache
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from gram_jax.config.loading import load_config_module
from gram_jax.config.validation import validate_config
from gram_jax.train import train_and_evaluate

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
PAPER_ROWS = {
    "zeroshot_tv": [""],
    "zeroshot_tva": [""],
    "zeroshot_tvas": [""],
    "finetune_tv": ["msrvtt", "didemo", "activitynet", "vatex"],
    "finetune_tva": ["msrvtt", "didemo", "activitynet", "vatex"],
    "finetune_tvas": ["msrvtt", "vatex"],
    "classify_tva": ["", "vggsound", "audioset"],
}
ABLATIONS = ("loss", "modalities", "gather_mode", "temperature", "matching")


def load(relative: str):
    return load_config_module(EXPERIMENTS / relative)


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
    files -= {"paper/__init__.py", "ablations/__init__.py"}
    files = {f for f in files if f.startswith(("paper/", "ablations/"))}
    assert files == {relative for relative, _ in CASES}


@pytest.mark.parametrize("relative, arg", CASES, ids=[f"{r}:{a}" for r, a in CASES])
def test_config_loads_and_validates(relative, arg):
    module = load(relative)
    full = module.get_config(arg or None)
    validate_config(full)
    doc = module.__doc__
    for needed in (
        "Command",
        "python -m gram_jax.cli.train",
        "Hardware" if "paper" in relative else "",
    ):
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


# JAX's documented switch for programs that run too briefly to repay optimisation: XLA's LLVM
# backend at -O0 (the HLO passes still run, the program is the same). It halves the compile time of
# a tiny train step on CPU (measured 32 s -> 16 s on 2 busy cores); 2 tiny steps hardly notice.
FAST_COMPILE = "jax_disable_most_optimizations"


@pytest.fixture(scope="module", autouse=True)
def _fast_cached_compiles():
    # Set-ups with the same model share their init and checkpoint programs through the persistent
    # cache (xdist workers too): each is compiled once per cache, not once per set-up.
    previous = getattr(jax.config, "values", {}).get(FAST_COMPILE, False)
    _set_fast_compile(True)
    try:
        with jax_cache.in_process_cache():
            yield
    finally:
        _set_fast_compile(previous)


def _set_fast_compile(value: bool) -> None:
    # A JAX without the switch compiles at full optimisation: slower only.
    with contextlib.suppress(AttributeError):
        jax.config.update(FAST_COMPILE, value)


def logged_scalars(workdir: pathlib.Path) -> dict[str, list[float]]:
    """{tag: values in step order} of the TensorBoard event files the run wrote in `workdir`.

    Event files are TFRecord files of `Event` protos: per record a little-endian uint64 length, its
    uint32 CRC, the payload, the payload's CRC (the CRCs are not checked here).
    """
    out: dict[str, list[float]] = {}
    files = sorted(workdir.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {workdir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(value.simple_value)
    return out


SETUPS = distinct_setups()


@pytest.mark.parametrize("relative, arg", SETUPS, ids=[f"{r}:{a}" for r, a in SETUPS])
def test_setup_runs_two_real_steps(relative, arg, tmp_path):
    config = runlocal_config(relative, arg)
    config.total_steps = 2
    config.checkpoint_steps = 2
    # The train step is under test here; evaluation of a runlocal run: tests/test_readme_howtos.py.
    config.evals = {}
    state = train_and_evaluate(config, tmp_path)
    assert int(state["step"]) == 2
    for leaf in jax.tree.leaves(state["params"]):
        assert np.isfinite(np.asarray(leaf)).all()
    assert (tmp_path / "checkpoints" / "2").is_dir()

    # log_every=1: one value per step of the total and of every term the configured loss names.
    scalars = logged_scalars(tmp_path)
    terms = {f"loss_{config.loss.name}", "loss"}
    if config.loss.matching_weight > 0:
        terms.add("loss_matching")
    logged_terms = {k for k in scalars if k.startswith("loss")}
    assert logged_terms == terms, (relative, arg, sorted(scalars))
    for term in (*terms, "grad_norm"):
        assert len(scalars[term]) == 2 and np.isfinite(scalars[term]).all(), (term, scalars[term])
