"""Device mesh, logical-axis sharding rules, global batches and multi-host start-up.

The library uses one mesh with three named axes and Auto axis types throughout (jax 0.10+: the
Explicit default of `jax.make_mesh` rejects `with_sharding_constraint`):

- ``data``: pure data parallelism (parameters replicated over it);
- ``fsdp``: data parallelism whose parameters and optimizer state are also sharded (ZeRO-3 style);
- ``model``: tensor parallelism (attention heads and MLP hidden units split).

The batch is split over ``('data', 'fsdp')``. Layers annotate parameters with *logical* axis names
(``embed``, ``mlp``, ``heads`` ...); `LOGICAL_AXIS_RULES` maps each to a mesh axis (or ``None`` =
replicated). A dimension that the mapped mesh axis does not divide is replicated instead, so tiny
test towers shard on any mesh.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax._src import distributed as jax_distributed
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axis. Embedding-width dimensions are FSDP-sharded, the "wide" dimensions of
# attention and MLP blocks are tensor-parallel; sequence-like and small axes stay replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("q_heads", "model"),
    ("kv_heads", "model"),
    ("kv", None),
    ("head_dim", None),
    ("vocab", "model"),
    ("joint", None),
    ("proj", None),
    ("classes", None),
    ("layers", None),
    ("length", None),
    ("seq", None),
    ("frames", None),
    ("patch", None),
    ("channels", None),
    ("conv_in", None),
    ("conv_out", None),
    ("norm", None),
    ("pos", None),
)

# Variable metadata keys that hold logical axis names: gram_jax.models.layers tags parameters with
# `logical_axes`; nnx.with_partitioning stores `out_sharding` (flax 0.12.8) or `sharding_names`.
_SHARDING_METADATA_KEYS = ("logical_axes", "out_sharding", "sharding_names", "sharding")

log = logging.getLogger(__name__)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolves the (data, fsdp, model) sizes; one of them may be -1 (= whatever is left).

    Raises ValueError naming the key when the sizes do not multiply to `num_devices`.
    """
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config.mesh: unknown axes {sorted(unknown)}; expected keys {MESH_AXES}")
    sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
    named = lambda: dict(zip(MESH_AXES, sizes, strict=True))  # noqa: E731
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {named()}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh: sizes must be positive or -1, got {sizes}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"config.mesh: fixed axes multiply to {known}, which does not divide the "
                f"{num_devices} devices"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"config.mesh: {named()} needs {int(np.prod(sizes))} devices, "
            f"but {num_devices} are available"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the (data, fsdp, model) mesh over `devices` (default: all global devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(
        np.asarray(devices).reshape(shape),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * len(MESH_AXES),
    )


def logical_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names a layer attached to `variable`, or None when it has none (also for
    plain array leaves that a module keeps as `nnx.data`)."""
    if not isinstance(variable, nnx.Variable):
        return None
    metadata = variable.get_metadata()
    for key in _SHARDING_METADATA_KEYS:
        names = metadata.get(key)
        if names is not None and not isinstance(names, NamedSharding | PartitionSpec):
            return tuple(names)
        if isinstance(names, PartitionSpec):
            return tuple(names)
    return None


def logical_to_spec(
    names: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> PartitionSpec:
    """Maps logical axis names of an array of `shape` to a PartitionSpec on `mesh`.

    The one mapping from logical names to mesh axes, for parameters (`state_shardings`) and
    activations (`gram_jax.models.axes.constrain`). Rules are read in order, with the priority of
    flax's `logical_to_mesh_axes`: a rule ``(name, mesh axes)`` assigns its mesh axes to the first
    still unassigned dimension called `name` if none of them is used by another dimension, so an
    earlier rule wins and a later rule for the same name is a fallback. Two differences from flax,
    so that tiny test towers shard on any mesh: a rule whose mesh axes do not divide the dimension,
    or whose axes all have size 1, is skipped too (the next rule for the name is tried); and a name
    used twice is allowed (a later dimension can only take a later rule). A rule ``(name, None)``
    and a name without any rule leave the dimension replicated.

    Args:
      names: one logical name (or None = replicated) per dimension; None or () = fully replicated.
      shape: the array's shape (len(names) entries).
      mesh: the mesh whose axis sizes decide divisibility.
      rules: sequence of (logical name, mesh axis | tuple of mesh axes | None).
    """
    if not names:
        return PartitionSpec()
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match an array of shape {shape}")
    spec: list[Any] = [None] * len(names)
    settled = [name is None for name in names]
    used: set[str] = set()
    for rule_name, target in rules:
        dim = next((i for i, n in enumerate(names) if n == rule_name and not settled[i]), None)
        if dim is None:
            continue
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        if not axes:
            settled[dim] = True
            continue
        total = int(np.prod([mesh.shape[a] for a in axes]))
        if used.intersection(axes) or total == 1 or shape[dim] % total:
            continue
        spec[dim] = axes[0] if len(axes) == 1 else axes
        settled[dim] = True
        used.update(axes)
    return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> dict:
    """NamedShardings of an (abstract) nnx.State, as a pure dict like `nnx.to_pure_dict(state)`."""

    def leaf_sharding(variable):
        names = logical_names(variable)
        if names is not None and len(names) < len(variable.shape):
            # Scan-over-layers stacks parameters on a leading axis the annotation does not name
            # (gram_jax.models.axes.logical_axes_tree calls it 'layers').
            names = ("layers",) * (len(variable.shape) - len(names)) + tuple(names)
        spec = logical_to_spec(names, variable.shape, mesh, rules)
        return NamedSharding(mesh, spec)

    shardings = jax.tree.map(leaf_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(shardings)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of a fully replicated value (scalars, rng keys)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading dimension split over the batch axes (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, *, all_rows: bool = False
) -> dict[str, jax.Array]:
    """Places a host batch on the mesh as global arrays whose rows are sharded over (data, fsdp).

    Args:
      batch: flat dict of arrays with a leading row dimension (docs/contracts.md).
      mesh: the device mesh.
      all_rows: False (training): each process holds its own rows [B_local, ...] and the global
        arrays are [B_local * process_count, ...] (every process's shard must divide its local
        devices). True (evaluation, inference): every process holds the same whole batch [n, ...];
        rows are zero-padded to a multiple of `batch_divisor(mesh)`, so any n fits the mesh, and
        the global arrays are [n + pad, ...] (the caller keeps the first n rows of the outputs).
    Returns:
      the same keys as global jax.Arrays. Raises ValueError naming a scalar entry.
    """
    pad = 0
    if all_rows and batch:
        n = np.shape(next(iter(batch.values())))[0]
        pad = (-n) % batch_divisor(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ValueError(
                f"batch[{key!r}] is a scalar; every batch entry needs a batch dimension"
            )
        if pad:
            value = np.concatenate([value, np.zeros((pad, *value.shape[1:]), value.dtype)])
        out[key] = jax.make_array_from_process_local_data(
            batch_sharding(mesh, value.ndim), value, value.shape if all_rows else None
        )
    return out


def batch_divisor(mesh: Mesh) -> int:
    """How many shards the batch dimension is split into."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def maybe_initialize_distributed(distributed_config: Mapping[str, Any] | None = None) -> bool:
    """Starts JAX's multi-controller runtime when the run spans several processes.

    `distributed_config` (config.distributed) may give coordinator_address, num_processes and
    process_id explicitly (used by tests with local processes); otherwise `initialize=True` or a
    cluster environment (SLURM with more than one task, TPU pod, JAX_COORDINATOR_ADDRESS) makes JAX
    auto-detect them. Returns True when the runtime was initialised here.
    """
    cfg = dict(distributed_config or {})
    address = cfg.get("coordinator_address") or None
    explicit = address is not None
    auto = bool(cfg.get("initialize", False)) or any(
        [
            int(os.environ.get("SLURM_NTASKS", "1")) > 1,
            "JAX_COORDINATOR_ADDRESS" in os.environ,
            "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ["TPU_WORKER_HOSTNAMES"],
        ]
    )
    if not (explicit or auto):
        return False
    if jax.distributed.is_initialized():
        return False
    kwargs = {}
    if explicit:
        kwargs = dict(
            coordinator_address=address,
            num_processes=int(cfg["num_processes"]),
            process_id=int(cfg["process_id"]),
        )
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process reaches `name` (no-op with one process).

    Uses the coordination service, not a device collective: the CPU (gloo) collectives give up
    after 30 s, and processes that compile at different speeds can be further apart than that
    when they reach their first collective.
    """
    if jax.process_count() == 1:
        return
    # The runtime client has no public accessor: `jax._src.distributed` is its only home.
    client = jax_distributed.global_state.client
    if client is None:
        raise RuntimeError("parallel.barrier: several processes but no jax.distributed client")
    client.wait_at_barrier(name, int(timeout_s * 1000))
