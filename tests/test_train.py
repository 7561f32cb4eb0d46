"""The trainer end to end on the real reference clips with tiny towers (runlocal)."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax_cache
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import base_config
from gram_jax import parallel
from gram_jax.cli.exit_codes import EXIT_PREEMPTED
from gram_jax.train import Trainer, train_and_evaluate
from gram_jax.train.evaluate import evaluate_checkpoint
from gram_jax.train.guard import NonFiniteLossError, check_finite

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache():
    # Every test here uses the same runlocal config, so each compiled program is built once.
    with jax_cache.in_process_cache():
        yield


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


def _batches(config, n):
    from data_pipelines.pipeline import make_train_iterator

    it = make_train_iterator(config.data, process_index=0, process_count=1)
    return [next(it) for _ in range(n)]


def test_runlocal_trains_checkpoints_and_logs(tmp_path):
    config = _config()  # runlocal: 4 steps, a checkpoint every 2
    state = train_and_evaluate(config, tmp_path)
    assert int(state["step"]) == 4
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 4]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["total_steps"] == 4 and saved["data"]["batch_size"] == 4
    # The final evaluation (runlocal: retrieval over the 4 clips, 3 scorings) is one JSON line.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert record["step"] == 4 and record["eval"] == "reference_clips"
    for key in ("t2d/R@1", "d2t/R@1", "cosine/t2d/R@1", "matching/t2d/R@1", "positive_volume"):
        assert np.isfinite(record[key]), key
    assert 0.0 <= record["t2d/R@1"] <= 100.0
    # A second call continues from the workdir's checkpoint: nothing is left to do.
    again = train_and_evaluate(config, tmp_path)
    assert int(again["step"]) == 4
    for a, b in zip(
        jax.tree.leaves(state["params"]), jax.tree.leaves(again["params"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # gram-eval on the same workdir restores the last checkpoint and evaluates it again: the
    # same parameters give the same metrics.
    results = evaluate_checkpoint(config, tmp_path)
    assert results["reference_clips"]["t2d/R@1"] == record["t2d/R@1"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_nonfinite_loss_names_step_and_term():
    # Corrupt audio features (NaN, as a broken decoder could produce) make the step's loss
    # non-finite; the guard names the step and every offending term.
    config = _config()
    trainer = Trainer(config)
    state = trainer.init_state()
    good, bad = _batches(config, 2)
    bad = dict(bad, audio=np.full_like(bad["audio"], np.nan))
    pending = []
    for step, batch in enumerate((good, bad)):
        state, metrics = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
        pending.append((step, metrics))
    # Step index 1 produced state 2: errors use the numbering of the logs and checkpoints.
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite loss_volume = "):
        check_finite(pending, trainer.term_names)
    check_finite(pending[:1], trainer.term_names)  # step 0 was fine


def test_eight_devices_equal_one_device():
    config = _config()
    batches = _batches(config, 2)
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
        assert mesh.devices.size == (1 if name == "one" else 8)
    one, eight = results["one"], results["eight"]
    assert one[1] == pytest.approx(eight[1], rel=1e-5)
    assert one[0].keys() == eight[0].keys()
    for key in one[0]:
        np.testing.assert_allclose(eight[0][key], one[0][key], rtol=2e-5, atol=2e-6, err_msg=key)


def _gram_train(workdir, steps, checkpoint_steps):
    # 8 devices, mesh data=4 x model=2: the program the in-process tests compile (a cache hit).
    return [
        sys.executable,
        "-m",
        "gram_jax.cli.train",
        f"--config={ROOT / 'experiments' / 'base_config.py'}:runlocal",
        f"--workdir={workdir}",
        f"--config.total_steps={steps}",
        f"--config.checkpoint_steps={checkpoint_steps}",
        "--config.async_checkpoints=False",
        "--config.mesh.data=4",
        "--config.mesh.model=2",
    ]


def _start_and_signal(cmd, env, checkpoint: pathlib.Path, signum: int) -> int:
    """Starts `cmd`, sends `signum` once `checkpoint` exists, returns the exit code."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    deadline = time.time() + 900
    # orbax renames a finished checkpoint into place, so the directory appears complete.
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    return proc.wait(timeout=900)


def _steps_saved(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_kill9_and_sigterm_then_resume_is_bit_identical_to_uninterrupted(tmp_path):
    # Room after each signal's trigger checkpoint: with 4 steps a fast (cached) run could finish
    # its last 2 tiny steps before SIGTERM arrived, which CI once saw.
    steps = 10
    env = jax_cache.subprocess_env(8, ROOT)
    straight = tmp_path / "straight"
    subprocess.run(_gram_train(straight, steps, 1), env=env, check=True, cwd=ROOT, timeout=900)

    run = tmp_path / "interrupted"
    cmd = _gram_train(run, steps, 1)
    # kill -9 right after the first checkpoint: the process dies mid-run, nothing is flushed.
    code = _start_and_signal(cmd, env, run / "checkpoints" / "1", signal.SIGKILL)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    assert 1 <= max(_steps_saved(run)) < steps
    # The restart resumes from step 1; SIGTERM (pre-emption) after its next checkpoint makes it
    # save at the step it reached and exit with 75 (EX_TEMPFAIL: requeue me), not 0.
    code = _start_and_signal(cmd, env, run / "checkpoints" / "2", signal.SIGTERM)
    assert code == EXIT_PREEMPTED == 75
    assert 2 <= max(_steps_saved(run)) < steps, "the run finished before SIGTERM arrived"
    done = subprocess.run(
        cmd, env=env, check=True, cwd=ROOT, timeout=900, capture_output=True, text=True
    )
    # The default console: our progress lines and summary, no orbax/absl INFO chatter.
    assert f"finished at step {steps}: final state" in done.stderr
    assert f"step {steps}/{steps}: loss " in done.stderr
    assert "CheckpointManager" not in done.stderr, done.stderr[-3000:]

    a, b = _leaves(_final_params(straight, steps)), _leaves(_final_params(run, steps))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
