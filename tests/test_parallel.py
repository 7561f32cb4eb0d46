"""Mesh construction, logical-axis sharding rules and global batches on 8 fake CPU devices."""

import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from gram_jax import optim, parallel
from gram_jax.config.defaults import trainer_defaults
from gram_jax.models import layers
from gram_jax.train.state import opt_state_shardings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_mesh_shape_fills_the_minus_one_axis():
    assert parallel.mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == (4, 2, 1)
    assert parallel.mesh_shape({"data": 1, "fsdp": -1, "model": 2}, 8) == (1, 4, 2)


@pytest.mark.parametrize(
    "mesh, message",
    [
        ({"data": 3, "fsdp": 1, "model": 1}, "needs 3 devices"),
        ({"data": -1, "fsdp": -1, "model": 1}, "at most one axis"),
        ({"data": -1, "fsdp": 3, "model": 1}, "does not divide"),
        ({"data": -1, "fsdb": 2}, "unknown axes"),
    ],
)
def test_bad_mesh_config_is_named(mesh, message):
    with pytest.raises(ValueError, match=message):
        parallel.mesh_shape(mesh, 8)


def test_make_mesh_uses_auto_axes_over_all_devices():
    mesh = parallel.make_mesh({"data": -1, "fsdp": 2, "model": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert mesh.devices.size == jax.device_count() == 8


def test_logical_to_spec_maps_and_replicates_what_does_not_divide():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    assert parallel.logical_to_spec(("embed", "mlp"), (8, 16), mesh) == P("fsdp", "model")
    # 7 rows cannot be split over fsdp=2: that dimension stays replicated
    assert parallel.logical_to_spec(("embed", "mlp"), (7, 16), mesh) == P(None, "model")
    assert parallel.logical_to_spec(("vocab", "embed"), (10, 8), mesh) == P("model", "fsdp")
    # a name without a rule (and None) is replicated, as gram_jax.models.layers documents
    assert parallel.logical_to_spec(("layers", "unheard_of"), (2, 4), mesh) == P(None, None)
    with pytest.raises(ValueError, match="do not match"):
        parallel.logical_to_spec(("embed",), (2, 4), mesh)


def test_logical_to_spec_rule_priority_is_flax_s():
    """An earlier rule wins a mesh axis (whatever the dimension order); a later rule for the same
    name is a fallback when the first one's axes are taken or do not divide."""
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    rules = (("mlp", "model"), ("heads", "model"), ("heads", "fsdp"), ("mlp", None))
    # heads comes first in the array, but the mlp rule comes first in the rules
    assert parallel.logical_to_spec(("heads", "mlp"), (4, 4), mesh, rules) == P("fsdp", "model")
    # the first heads rule applies when model is free; the fallback is not used
    assert parallel.logical_to_spec(("heads", "kv"), (4, 4), mesh, rules) == P("model", None)
    # model does not divide 3, so the fallback fsdp does not either: replicated
    assert parallel.logical_to_spec(("heads",), (3,), mesh, rules) == P(None)
    # the first rule for a name wins (flax), not the last
    first = (("embed", "fsdp"), ("embed", "model"))
    assert parallel.logical_to_spec(("embed",), (4,), mesh, first) == P("fsdp")
    # a rule to None is final: the later rule for the name is not tried
    final = (("embed", None), ("embed", "model"))
    assert parallel.logical_to_spec(("embed",), (4,), mesh, final) == P(None)
    # mesh axes of size 1 do not shard and are not claimed
    flat = parallel.make_mesh({"data": 8, "fsdp": 1, "model": 1})
    assert parallel.logical_to_spec(("embed", "mlp"), (8, 8), flat) == P(None, None)
    assert parallel.logical_to_spec(("batch", "embed"), (8, 8), flat) == P(("data", "fsdp"), None)


class Block(nnx.Module):
    def __init__(self, rngs):
        self.up = layers.Dense(8, 16, axes=("embed", "mlp"), rngs=rngs)
        self.norm = layers.LayerNorm(16, axis_name="mlp", rngs=rngs)
        self.tok = layers.Embed(12, 8, rngs=rngs)


def test_state_shardings_follow_layer_annotations():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    abstract = nnx.eval_shape(lambda: Block(nnx.Rngs(0)))
    shardings = parallel.state_shardings(nnx.state(abstract, nnx.Param), mesh)
    assert shardings["up"]["kernel"].spec == P("fsdp", "model")
    assert shardings["up"]["bias"].spec == P("model")
    assert shardings["tok"]["embedding"].spec == P("model", "fsdp")
    # The arrays really land sharded: each device holds a quarter of the kernel.
    kernel = jax.device_put(jnp.ones((8, 16)), shardings["up"]["kernel"])
    assert {s.data.shape for s in kernel.addressable_shards} == {(4, 8)}


def test_optimizer_state_follows_parameter_shardings():
    mesh = parallel.make_mesh({"data": 1, "fsdp": 4, "model": 2})
    model = Block(nnx.Rngs(0))
    config = trainer_defaults()
    tx, _ = optim.make_optimizer(config.optim, config.schedule, 10, model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    p_shard = parallel.state_shardings(nnx.state(model, nnx.Param), mesh)
    abstract_opt = jax.eval_shape(tx.init, params)
    o_shard = opt_state_shardings(abstract_opt, p_shard, params, mesh)
    specs = [
        (tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path), s.spec)
        for path, s in jax.tree_util.tree_flatten_with_path(o_shard)[0]
    ]
    mu_kernel = [spec for path, spec in specs if path[-3:] == ("mu", "up", "kernel")]
    assert mu_kernel == [P("fsdp", "model")]
    counts = [spec for path, spec in specs if path[-1] == "count"]
    assert counts and all(spec == P() for spec in counts)


def test_global_batch_splits_rows_over_data_and_fsdp():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    local = {
        "text_ids": np.arange(8 * 5, dtype=np.int32).reshape(8, 5),
        "present_video": np.ones(8, bool),
    }
    batch = parallel.global_batch(local, mesh)
    assert batch["text_ids"].shape == (8, 5)
    np.testing.assert_array_equal(np.asarray(batch["text_ids"]), local["text_ids"])
    # 4 batch shards of 2 rows, each replicated over the model axis
    assert {s.data.shape for s in batch["text_ids"].addressable_shards} == {(2, 5)}
    assert parallel.batch_divisor(mesh) == 4
    with pytest.raises(ValueError, match="scalar"):
        parallel.global_batch({"step": np.int32(3)}, mesh)


def test_global_batch_of_all_rows_pads_to_the_batch_shards():
    # Evaluation: every process holds the whole batch; 6 rows on 4 batch shards become 8, the
    # two extra rows zeros, and the real rows come back unchanged.
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    rows = {
        "video": np.arange(6 * 3, dtype=np.float32).reshape(6, 3) + 1,
        "valid": np.ones(6, bool),
    }
    batch = parallel.global_batch(rows, mesh, all_rows=True)
    assert batch["video"].shape == (8, 3) and batch["valid"].shape == (8,)
    np.testing.assert_array_equal(np.asarray(batch["video"])[:6], rows["video"])
    assert not np.asarray(batch["video"])[6:].any() and not np.asarray(batch["valid"])[6:].any()
    assert {s.data.shape for s in batch["video"].addressable_shards} == {(2, 3)}


CLUSTER_VARS = (
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_STEP_NODELIST",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
    "SLURM_NODEID",
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "KUBERNETES_SERVICE_HOST",
    "JAX_COORDINATOR_ADDRESS",
)


@pytest.fixture
def no_cluster(monkeypatch):
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_no_distributed_init_without_cluster(no_cluster):
    # JAX's own detection, on a machine in no cluster: nothing found, fast, nothing started.
    start = time.perf_counter()
    assert parallel.detect_cluster() is None
    assert parallel.maybe_initialize_distributed({"enabled": "auto"}) is False
    assert parallel.maybe_initialize_distributed(None) is False
    assert time.perf_counter() - start < 0.5  # measured about 0.1 ms
    assert not jax.distributed.is_initialized()


def test_slurm_is_detected_from_its_variables_and_one_task_starts_nothing(no_cluster):
    no_cluster.setenv("SLURM_JOB_ID", "4242")
    no_cluster.setenv("SLURM_NTASKS", "2")
    no_cluster.setenv("SLURM_PROCID", "1")
    no_cluster.setenv("SLURM_LOCALID", "1")
    no_cluster.setenv("SLURM_STEP_NODELIST", "node[003-004]")
    assert parallel.detect_cluster() == ("slurm", 2)
    no_cluster.setenv("SLURM_NTASKS", "1")  # a one-task job: nothing to coordinate
    assert parallel.maybe_initialize_distributed({}) is False
    assert not jax.distributed.is_initialized()
    # 'off' never starts, even inside a cluster
    no_cluster.setenv("SLURM_NTASKS", "2")
    assert parallel.maybe_initialize_distributed({"enabled": "off"}) is False


def test_tasks_on_this_host_reads_slurms_compressed_list(no_cluster):
    assert parallel._tasks_on_this_host() is None
    no_cluster.setenv("SLURM_STEP_TASKS_PER_NODE", "8(x2),1")
    no_cluster.setenv("SLURM_NODEID", "1")
    assert parallel._tasks_on_this_host() == 8
    no_cluster.setenv("SLURM_NODEID", "2")
    assert parallel._tasks_on_this_host() == 1


def test_distributed_config_errors_name_the_key(no_cluster):
    with pytest.raises(ValueError, match=r"config.distributed.enabled='yes'"):
        parallel.maybe_initialize_distributed({"enabled": "yes"})
    with pytest.raises(ValueError, match=r"config.distributed.initialize is no longer read"):
        parallel.maybe_initialize_distributed({"initialize": True})
    with pytest.raises(ValueError, match=r"coordinator_address='h:1' with .*enabled='off'"):
        parallel.maybe_initialize_distributed({"enabled": "off", "coordinator_address": "h:1"})


def test_enabled_on_without_a_cluster_fails_in_one_line(tmp_path):
    # A fresh process: this one has started its CPU backend, after which jax refuses to start.
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    code = "from gram_jax import parallel; parallel.maybe_initialize_distributed({'enabled': 'on'})"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "found no complete cluster" in done.stderr, done.stderr[-2000:]
