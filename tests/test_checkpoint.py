"""orbax checkpoints of {state, data iterator, config}: resharding, keep-N, resume, SIGTERM."""

import os
import signal

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import serialization

from gram_jax import parallel
from gram_jax.train import checkpoint


def _state(mesh):
    kernel = parallel.logical_to_spec(("embed", "mlp"), (8, 16), mesh)
    k_shard = jax.sharding.NamedSharding(mesh, kernel)
    rep = parallel.replicated(mesh)
    state = {
        "params": {"tower": {"kernel": jnp.arange(128.0).reshape(8, 16), "bias": jnp.ones(16)}},
        "step": jnp.int32(7),
        "rng": jax.random.key_data(jax.random.key(3)),
    }
    shardings = {
        "params": {"tower": {"kernel": k_shard, "bias": rep}},
        "step": rep,
        "rng": rep,
    }
    return jax.device_put(state, shardings), shardings


def _iterator():
    ds = grain.MapDataset.range(100).shuffle(seed=1).batch(4).to_iter_dataset()
    return iter(ds)


def test_save_on_8_devices_restore_on_2_with_iterator_and_config(tmp_path):
    mesh8 = parallel.make_mesh({"data": 1, "fsdp": 4, "model": 2})
    state, _ = _state(mesh8)
    it = _iterator()
    for _ in range(3):
        next(it)
    expected_next = next(_restored_copy(it))
    config = ml_collections.ConfigDict({"total_steps": 5, "seed": 3})
    manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=2)
    assert checkpoint.save(manager, 7, state, it, config)
    manager.wait_until_finished()

    mesh2 = parallel.make_mesh({"data": 1, "fsdp": 2, "model": 1}, jax.devices()[:2])
    _, shardings2 = _state(mesh2)
    abstract = checkpoint.abstract_like(state, shardings2)
    fresh = _iterator()
    restored, fresh = checkpoint.restore(manager, None, abstract, fresh)
    kernel = restored["params"]["tower"]["kernel"]
    np.testing.assert_array_equal(np.asarray(kernel), np.arange(128.0).reshape(8, 16))
    assert kernel.sharding.mesh.devices.size == 2
    assert {s.data.shape for s in kernel.addressable_shards} == {(4, 16)}
    np.testing.assert_array_equal(next(fresh), expected_next)
    saved_config = (tmp_path / "checkpoints" / "7" / "config").glob("*")
    assert any(p.read_text().count('"total_steps": 5') for p in saved_config)
    manager.close()


def _restored_copy(it):
    clone = _iterator()
    clone.set_state(it.get_state())
    return clone


def test_keep_n_removes_old_steps(tmp_path):
    mesh = parallel.make_mesh({"data": -1})
    state, _ = _state(mesh)
    manager = checkpoint.make_manager(tmp_path, keep=2, asynchronous=False)
    for step in (1, 2, 3):
        checkpoint.save(manager, step, state)
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 3]
    manager.close()


def test_resume_order_workdir_then_resume_then_model_init_then_scratch(tmp_path):
    mesh = parallel.make_mesh({"data": -1})
    state, shardings = _state(mesh)
    abstract = checkpoint.abstract_like(state, shardings)
    zeros = jax.tree.map(jnp.zeros_like, state)
    init_fn = lambda: zeros  # noqa: E731
    config = ml_collections.ConfigDict({"resume": "", "model_init": ""})

    # scratch
    empty = checkpoint.make_manager(tmp_path / "a" / "checkpoints")
    got, _, source = checkpoint.restore_or_initialize(empty, config, abstract, init_fn)
    assert source == "scratch" and float(got["params"]["tower"]["bias"][0]) == 0.0

    # model_init: a partial weights file (only the kernel), written as gram-convert would
    weights = tmp_path / "converted.msgpack"
    weights.write_bytes(
        serialization.msgpack_serialize({"tower": {"kernel": np.full((8, 16), 2.0, np.float32)}})
    )
    config.model_init = str(weights)
    with pytest.raises(ValueError, match="would stay at their initial values: tower/bias"):
        checkpoint.restore_or_initialize(empty, config, abstract, init_fn)
    config.model_init_allow_missing = ("tower/b*",)  # the bias may start from init
    got, _, source = checkpoint.restore_or_initialize(empty, config, abstract, init_fn)
    assert source.startswith("model_init:")
    assert float(got["params"]["tower"]["kernel"][0, 0]) == 2.0
    assert float(got["params"]["tower"]["bias"][0]) == 0.0  # not in the file: stays initialised

    # resume: another run's checkpoints beat model_init
    other = checkpoint.make_manager(tmp_path / "other" / "checkpoints")
    checkpoint.save(other, 7, state)
    other.wait_until_finished()
    other.close()
    config.resume = str(tmp_path / "other")
    got, _, source = checkpoint.restore_or_initialize(empty, config, abstract, init_fn)
    assert source.endswith(":7") and source.startswith("resume:")
    assert int(got["step"]) == 7

    # the workdir's own checkpoint beats everything
    mine = jax.tree.map(lambda x: x, state)
    mine["step"] = jnp.int32(9)
    checkpoint.save(empty, 9, mine)
    empty.wait_until_finished()
    got, _, source = checkpoint.restore_or_initialize(empty, config, abstract, init_fn)
    assert source == "workdir:9" and int(got["step"]) == 9
    empty.close()


def test_model_init_shape_mismatch_names_the_parameter(tmp_path):
    params = {"tower": {"kernel": jnp.zeros((8, 16))}}
    with pytest.raises(ValueError, match="tower/kernel has shape \\(4, 16\\)"):
        checkpoint.merge_partial_params(
            params, {("tower", "kernel"): np.zeros((4, 16))}, "converted.msgpack"
        )
    with pytest.raises(ValueError, match="none of its 1 parameters"):
        checkpoint.merge_partial_params(params, {("other",): np.zeros(3)}, "converted.msgpack")
    with pytest.raises(FileNotFoundError, match="config.model_init"):
        checkpoint.load_param_file(tmp_path / "missing.msgpack")


def test_npz_weights_load_by_slash_paths(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"tower/kernel": np.ones((2, 3), np.float32)})
    loaded = checkpoint.load_param_file(path)
    assert list(loaded) == [("tower", "kernel")]


def test_sigterm_sets_the_stop_flag():
    watcher = checkpoint.PreemptionWatcher()
    try:
        assert not watcher.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.should_stop(2)
    finally:
        watcher.close()
