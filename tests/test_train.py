"""The trainer end to end on the real reference clips with tiny towers (runlocal)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gram_jax import parallel
from gram_jax.train import Trainer, train_and_evaluate
from gram_jax.train_step import NonFiniteLossError

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import base_config  # noqa: E402


def _config(**changes):
    config = base_config.get_config("runlocal")
    # conftest gives this process 8 CPU devices; the batch of 4 splits over data=4.
    config.mesh.update(dict(data=4, fsdp=1, model=2))
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _final_params(workdir: pathlib.Path, step: int) -> dict:
    path = workdir / "checkpoints" / str(step) / "state"
    meta = ocp.PyTreeCheckpointer().metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ocp.PyTreeCheckpointer().restore(path, restore_args=restore_args)
    return state["params"]


def _leaves(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def test_runlocal_trains_checkpoints_and_logs(tmp_path):
    config = _config(total_steps=2, checkpoint_steps=1)
    state = train_and_evaluate(config, tmp_path)
    assert int(state["step"]) == 2
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        1,
        2,
    ]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["total_steps"] == 2
    # the run continues from its checkpoint: nothing left to do, same step
    again = train_and_evaluate(config, tmp_path)
    assert int(again["step"]) == 2


def test_nonfinite_loss_names_step_and_term(tmp_path):
    # An absurd learning rate sends the parameters to inf after the first update, so the loss of
    # step 1 is non-finite; the guard names that step and the term.
    config = _config(total_steps=3, checkpoint_steps=3, **{"optim.lr": 1e38})
    config.optim.lr_groups = {}
    config.schedule.name = "constant"
    config.schedule.warmup_fraction = 0.0
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 1: .*loss_volume"):
        train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints" / "3").exists()


def test_eight_devices_equal_one_device():
    config = _config(total_steps=2)
    from data_pipelines.pipeline import make_train_iterator

    batches = []
    it = make_train_iterator(config.data, process_index=0, process_count=1)
    for _ in range(2):
        batches.append(next(it))
    results = {}
    for name, mesh in {
        "one": parallel.make_mesh({"data": 1}, jax.devices()[:1]),
        "eight": parallel.make_mesh({"data": 4, "fsdp": 1, "model": 2}),
    }.items():
        trainer = Trainer(config, mesh=mesh)
        state = trainer.init_state()
        for batch in batches:
            state, metrics = trainer.train_step(state, parallel.global_batch(batch, mesh))
        results[name] = (_leaves(jax.device_get(state["params"])), float(metrics["loss"]))
        assert len(mesh.devices.flat) == (1 if name == "one" else 8)
    one, eight = results["one"], results["eight"]
    assert one[1] == pytest.approx(eight[1], rel=1e-5)
    assert one[0].keys() == eight[0].keys()
    for key in one[0]:
        np.testing.assert_allclose(eight[0][key], one[0][key], rtol=2e-5, atol=2e-6, err_msg=key)


def _gram_train(workdir, steps, checkpoint_steps, devices=1):
    return [
        sys.executable,
        "-m",
        "gram_jax.main",
        f"--config={ROOT / 'experiments' / 'base_config.py'}:runlocal",
        f"--workdir={workdir}",
        f"--config.total_steps={steps}",
        f"--config.checkpoint_steps={checkpoint_steps}",
        "--config.async_checkpoints=False",
    ]


def test_kill9_then_resume_is_bit_identical_to_uninterrupted(tmp_path):
    steps = 6
    env = _env(1)
    straight = tmp_path / "straight"
    subprocess.run(_gram_train(straight, steps, 2), env=env, check=True, cwd=ROOT, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_gram_train(killed, steps, 2), env=env, cwd=ROOT)
    first = killed / "checkpoints" / "2"
    deadline = time.time() + 240
    # orbax renames a finished checkpoint into place, so the directory appears complete.
    while not first.exists() and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    done = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert done and max(done) < steps
    subprocess.run(_gram_train(killed, steps, 2), env=env, check=True, cwd=ROOT, timeout=300)

    a, b = _leaves(_final_params(straight, steps)), _leaves(_final_params(killed, steps))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
