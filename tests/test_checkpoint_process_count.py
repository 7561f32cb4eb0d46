"""The data-iterator item of a checkpoint on another process count (fast, one process): a global
position is handed to every new process; a per-process one is refused in one line and the
checkpoint stays in place. The real 2 -> 1 and 1 -> 2 resumes run in tests/test_cluster_start.py.

A save by 2 processes is written here as `IteratorHandler` writes it on each of them: the same
checkpoint with its ``data`` folder holding ``process_0-of-2.json`` and ``process_1-of-2.json``.
"""

import json

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gram_jax import parallel
from gram_jax.train import checkpoint


class GlobalPosition:
    """An iterator whose state is the number of global batches consumed (as TrainIterator's)."""

    state_is_global = True

    def __init__(self):
        self.step = 0

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = state["step"]


def _state(step: int):
    mesh = parallel.make_mesh({"data": -1})
    state = {"params": {"w": jnp.full((8, 4), float(step))}, "step": jnp.int32(step)}
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), state)
    return jax.device_put(state, shardings), shardings


def _save_as_two_processes(root, iterator, states) -> checkpoint.ocp.CheckpointManager:
    """Checkpoint 3 of `root` with the data item two processes would write (`states`)."""
    manager = checkpoint.make_manager(root, asynchronous=False)
    state, _ = _state(3)
    checkpoint.save(manager, 3, state, iterator)
    manager.close()
    data = root / "3" / "data"
    (data / "process_0-of-1.json").unlink()
    for i, s in enumerate(states):
        (data / f"process_{i}-of-2.json").write_text(json.dumps({"kind": "json", "state": s}))
    return checkpoint.make_manager(root, asynchronous=False)


def _abstract():
    state, shardings = _state(0)
    return checkpoint.abstract_like(state, shardings)


CONFIG = ml_collections.ConfigDict({"resume": "", "model_init": ""})


def test_a_global_position_continues_on_another_process_count(tmp_path):
    saved = GlobalPosition()
    saved.step = 3
    manager = _save_as_two_processes(tmp_path / "checkpoints", saved, [{"step": 3}, {"step": 3}])
    state, it, source = checkpoint.restore_or_initialize(
        manager, CONFIG, _abstract(), lambda: None, GlobalPosition()
    )
    assert source == "workdir:3" and it.step == 3
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((8, 4), 3.0))
    manager.close()


@pytest.mark.parametrize("case", ["per-process iterator", "different positions"])
def test_a_per_process_position_is_refused_in_one_line_and_left_in_place(tmp_path, case):
    if case == "per-process iterator":  # grain's own iterator: its state is this process's
        it = iter(grain.MapDataset.range(100).batch(4).to_iter_dataset())
        next(it)
        states = [it.get_state(), it.get_state()]
        restore_into = iter(grain.MapDataset.range(100).batch(4).to_iter_dataset())
    else:
        it, states, restore_into = GlobalPosition(), [{"step": 3}, {"step": 2}], GlobalPosition()
    manager = _save_as_two_processes(tmp_path / "checkpoints", it, states)
    with pytest.raises(checkpoint.ProcessCountError) as err:
        checkpoint.restore_or_initialize(manager, CONFIG, _abstract(), lambda: None, restore_into)
    message = str(err.value)
    assert "\n" not in message and "saved by 2 processes and this run has 1" in message
    assert message.endswith("resume it with 2 processes")
    reason = "per-process position" if case == "per-process iterator" else "different positions"
    assert reason in message
    assert not (tmp_path / checkpoint.SET_ASIDE_DIR).exists()
    assert manager.all_steps() == [3]
    manager.close()


def test_an_incomplete_set_of_iterator_states_is_unreadable(tmp_path):
    manager = _save_as_two_processes(tmp_path / "checkpoints", GlobalPosition(), [{"step": 3}] * 2)
    (tmp_path / "checkpoints" / "3" / "data" / "process_1-of-2.json").unlink()
    fresh, _ = _state(0)
    _, _, source = checkpoint.restore_or_initialize(
        manager, CONFIG, _abstract(), lambda: fresh, GlobalPosition()
    )
    assert source == "scratch"  # the only checkpoint was set aside as unreadable
    assert (tmp_path / checkpoint.SET_ASIDE_DIR / "3.unreadable").is_dir()
    manager.close()
