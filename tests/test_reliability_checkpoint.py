"""Issue 14, checkpoint probes on a small sharded state: corrupt newest checkpoints fall back,
retention keeps the newest known-good one, a failed async write is raised at once in one line."""

import logging
import resource
import signal
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gram_jax import parallel
from gram_jax.train import checkpoint


def _state(value: float, step: int):
    mesh = parallel.make_mesh({"data": -1})
    rng = np.random.default_rng(step)
    state = {
        # Random values: orbax compresses, and a constant array would be a few bytes on disk.
        "params": {"kernel": jnp.asarray(rng.normal(size=(64, 64)) + value, jnp.float32)},
        "step": jnp.int32(step),
    }
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), state)
    return jax.device_put(state, shardings), shardings


def _iterator():
    return iter(grain.MapDataset.range(100).batch(4).to_iter_dataset())


def _workdir_with_steps(root, steps=(1, 2, 3)):
    manager = checkpoint.make_manager(root / "checkpoints", keep=5, asynchronous=False)
    it = _iterator()
    for step in steps:
        next(it)
        state, _ = _state(float(step), step)
        checkpoint.save(manager, step, state, it)
    manager.close()
    return checkpoint.make_manager(root / "checkpoints", keep=5, asynchronous=False)


def _abstract():
    state, shardings = _state(0.0, 0)
    return checkpoint.abstract_like(state, shardings)


def _truncate_arrays(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files, f"no array files under {step_dir}"
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _corrupt(kind, step_dir):
    if kind == "truncated arrays":
        _truncate_arrays(step_dir)
    elif kind == "deleted array file":
        files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
        max(files, key=lambda p: p.stat().st_size).unlink()  # the kernel's data
    elif kind == "truncated iterator json":
        path = step_dir / "data" / "process_0-of-1.json"
        path.write_text(path.read_text()[:7])


@pytest.mark.parametrize(
    "kind", ["truncated arrays", "deleted array file", "truncated iterator json"]
)
def test_unreadable_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(
    tmp_path, caplog, kind
):
    manager = _workdir_with_steps(tmp_path)
    _corrupt(kind, tmp_path / "checkpoints" / "3")
    config = ml_collections.ConfigDict({"resume": "", "model_init": ""})
    it = _iterator()
    with caplog.at_level(logging.WARNING, logger="gram_jax.train.checkpoint"):
        state, it, source = checkpoint.restore_or_initialize(
            manager, config, _abstract(), lambda: None, it
        )
    assert source == "workdir:2" and int(state["step"]) == 2
    assert next(it).tolist() == [8, 9, 10, 11]  # the data position of step 2
    # Renamed, never deleted; one line names the step and the cause.
    assert (tmp_path / "checkpoints_set_aside" / "3.unreadable" / "state").is_dir()
    assert manager.all_steps() == [1, 2]
    (line,) = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert line.startswith("checkpoint step 3 is unreadable (") and "\n" not in line
    assert "moved to" in line and len(line) < 600
    manager.close()


def test_when_no_checkpoint_is_readable_the_resume_order_continues(tmp_path, caplog):
    manager = _workdir_with_steps(tmp_path, steps=(1, 2))
    for step in (1, 2):
        _truncate_arrays(tmp_path / "checkpoints" / str(step))
    config = ml_collections.ConfigDict({"resume": "", "model_init": ""})
    fresh, _ = _state(0.0, 0)
    with caplog.at_level(logging.WARNING, logger="gram_jax.train.checkpoint"):
        _, _, source = checkpoint.restore_or_initialize(manager, config, _abstract(), lambda: fresh)
    assert source == "scratch"
    assert sorted(p.name for p in (tmp_path / "checkpoints_set_aside").iterdir()) == [
        "1.unreadable",
        "2.unreadable",
    ]
    manager.close()


def test_retention_never_deletes_the_newest_known_good_checkpoint(tmp_path):
    confirmed = {"step": 1}
    manager = checkpoint.make_manager(
        tmp_path, keep=1, asynchronous=False, good_bound=lambda: confirmed["step"]
    )
    for step in (1, 2, 3):
        checkpoint.save(manager, step, _state(0.0, step)[0])
    # keep_checkpoints=1 alone would leave [3]; step 1 is the newest known good one.
    assert manager.all_steps() == [1, 3]
    confirmed["step"] = 3
    checkpoint.save(manager, 4, _state(0.0, 4)[0])
    assert manager.all_steps() == [3, 4]
    manager.close()
    with pytest.raises(ValueError, match="keep_checkpoints=0: must be >= 1"):
        checkpoint.make_manager(tmp_path, keep=0)


def test_a_failed_async_save_is_raised_at_the_next_step_in_one_line(tmp_path):
    # A file-size limit makes the writer's write() fail as on a full disk (EFBIG, not ENOSPC).
    manager = checkpoint.make_manager(tmp_path, keep=2, asynchronous=True)
    state, _ = _state(0.0, 1)
    checkpoint.save(manager, 1, state)
    checkpoint.wait_for_saves(manager)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        checkpoint.save(manager, 2, state)
        start = time.perf_counter()
        with pytest.raises(checkpoint.CheckpointWriteError) as info:
            while not checkpoint.raise_save_errors(manager):  # what the loop does every step
                time.sleep(0.01)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    message = str(info.value)
    assert time.perf_counter() - start < 30
    assert message.startswith(f"saving a checkpoint to {tmp_path} failed: File too large [errno")
    assert "\n" not in message
    assert manager.all_steps() == [1]  # the failed step is not listed as a checkpoint
    manager.close()


@pytest.mark.torch
def test_gram_convert_refuses_a_non_checkpoint_in_our_words(tmp_path, caplog):
    pytest.importorskip("torch")
    import pickle

    from gram_jax.cli.convert import run

    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint\n")
    objects = tmp_path / "objects.pt"
    objects.write_bytes(pickle.dumps({"cfg": logging.Logger}))  # a pickled class, not tensors
    for path, reason in ((notes, "not in torch.save format"), (objects, "Python objects")):
        with pytest.raises(SystemExit) as code:
            run(["--format", "gram", "--input", str(path), "--output", str(tmp_path / "out")])
        assert code.value.code == 2
        err = caplog.records[-1].getMessage()  # the one line gram-convert logs (exit_codes)
        assert err.startswith(f"{path}: cannot be read as weights: ")
        assert err.endswith("(exit code 2)") and reason in err and "\n" not in err
        assert "weights_only" not in err  # torch's advice (weights_only=False) is unsafe here
