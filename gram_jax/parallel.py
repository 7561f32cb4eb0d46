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


DISTRIBUTED_MODES = ("auto", "on", "off")

# The options `jax.distributed.initialize` narrows to the local process id's device.
_VISIBLE_DEVICE_FLAGS = ("jax_cuda_visible_devices", "jax_rocm_visible_devices")


def _cluster_types() -> list[type] | None:
    """JAX's cluster environments (Cloud TPU VM/GKE TPU, SLURM, Kubernetes, Open MPI, mpi4py),
    in the order `jax.distributed.initialize()` tries them; None when they cannot be listed.

    JAX has no public query "is a cluster present?" that does not also start the runtime, so this
    reads the registry of `ClusterEnv` subclasses in `jax._src.clusters` (read here against jax
    0.10.2); `_env_var_cluster` is the fallback if a later jax moves it.
    """
    try:
        from jax._src import clusters  # noqa: PLC0415

        return [env for env in clusters.ClusterEnv._cluster_types if not env.opt_in_only_method]
    except (ImportError, AttributeError):
        return None


def _env_var_cluster() -> tuple[str, int] | None:
    """Fallback detection from the variables the launchers set (no network): (name, processes)."""
    if all(k in os.environ for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID")):
        return "slurm", int(os.environ["SLURM_NTASKS"])
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        return "ompi", int(os.environ["OMPI_COMM_WORLD_SIZE"])
    hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES")
    if hosts:
        return "gketpu", len(hosts.split(","))
    return None


def detect_cluster() -> tuple[str, int] | None:
    """(name, process count) of the cluster JAX's own auto-detection would join, or None.

    Fast and offline on a machine that is not in a cluster: the SLURM, Open MPI and GKE checks
    read environment variables, and the Cloud TPU VM check asks the GCE metadata server only when
    jax found TPU chips on the PCI bus at import (`jax._src.cloud_tpu_init`). A detection that
    raises (a half-configured environment) is logged and skipped.
    """
    envs = _cluster_types()
    if envs is None:
        return _env_var_cluster()
    for env in envs:
        name = getattr(env, "name", "") or env.__name__
        try:
            if env.is_env_present():
                return name, int(env.get_process_count())
        except Exception as exc:  # noqa: BLE001 -- a broken environment must not stop a 1-host run
            log.warning("jax.distributed: detecting %s failed (%s); not using it", name, exc)
    return None


def _tasks_on_this_host() -> int | None:
    """How many processes the launcher started on this host, when it says (SLURM, Open MPI)."""
    if "OMPI_COMM_WORLD_LOCAL_SIZE" in os.environ:
        return int(os.environ["OMPI_COMM_WORLD_LOCAL_SIZE"])
    spec = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return None
    # SLURM's compressed list, e.g. "8(x2),4": node i runs the i-th entry once expanded.
    counts: list[int] = []
    for part in spec.split(","):
        value, _, repeat = part.partition("(x")
        counts += [int(value)] * (int(repeat.rstrip(")")) if repeat else 1)
    node = int(os.environ.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else None


def maybe_initialize_distributed(distributed_config: Mapping[str, Any] | None = None) -> bool:
    """Starts JAX's multi-controller runtime when the run spans several processes.

    `distributed_config` is config.distributed:
      enabled: 'auto' (default) starts the runtime when coordinator_address (or the
        JAX_COORDINATOR_ADDRESS variable) is given or when JAX's own cluster detection finds more
        than one process (Cloud TPU VM slice, GKE TPU, SLURM, Kubernetes, Open MPI); 'on' always
        calls `jax.distributed.initialize()` (mpi4py launches, or to fail loudly when detection
        finds nothing); 'off' never starts it.
      coordinator_address, num_processes, process_id: explicit values ("host:port", N, i) for
        launchers JAX does not detect (plain SSH, local test processes).
    One process per host: when the launcher says this host runs one process, every local device
    stays visible (JAX's detection would otherwise keep only the device numbered by the local
    process id, its rule for one process per GPU).

    Returns True when the runtime was initialised here. Raises ValueError naming the key for a
    bad mode or an explicit address with enabled='off'.
    """
    cfg = dict(distributed_config or {})
    if "initialize" in cfg:  # the key before 'enabled'; never ignore what a config asks for
        raise ValueError(
            "config.distributed.initialize is no longer read: use config.distributed.enabled "
            f"('auto', 'on' or 'off'; initialize={cfg['initialize']!r} was given)"
        )
    mode = cfg.get("enabled", "auto")
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(
            f"config.distributed.enabled={mode!r}: expected one of {DISTRIBUTED_MODES}"
        )
    address = cfg.get("coordinator_address") or None
    if mode == "off":
        if address:
            raise ValueError(
                f"config.distributed.coordinator_address={address!r} with "
                "config.distributed.enabled='off': clear the address or enable the runtime"
            )
        return False
    if jax.distributed.is_initialized():
        return False
    kwargs: dict[str, Any] = {}
    if address:
        kwargs = dict(
            coordinator_address=address,
            num_processes=int(cfg["num_processes"]),
            process_id=int(cfg["process_id"]),
        )
        source = "config.distributed"
    elif mode == "on":
        source = "jax.distributed.initialize() auto-detection (enabled='on')"
    elif "JAX_COORDINATOR_ADDRESS" in os.environ:  # read by jax.distributed.initialize itself
        source = "JAX_COORDINATOR_ADDRESS"
    else:
        found = detect_cluster()
        if found is None or found[1] <= 1:
            return False  # one process: nothing to coordinate
        source = f"cluster {found[0]} ({found[1]} processes)"
    one_per_host = not address and _tasks_on_this_host() == 1
    visible = {n: jax.config.read(n) for n in _VISIBLE_DEVICE_FLAGS}
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as exc:  # jax: "coordinator_address should be defined." and the like
        if kwargs:
            raise
        raise ValueError(
            f"jax.distributed.initialize() (from {source}) found no complete cluster ({exc}); "
            "launch under SLURM, a Cloud TPU VM slice, GKE, Kubernetes or Open MPI, or set "
            "config.distributed.coordinator_address, num_processes and process_id"
        ) from exc
    if one_per_host:
        for name, value in visible.items():
            jax.config.update(name, value)
    log.info(
        "jax.distributed from %s: process %d of %d, %d local / %d global devices",
        source,
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
