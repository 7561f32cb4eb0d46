"""How a contrastive loss sees the batch across devices: the three gather modes.

Every contrastive loss in gram_jax compares the rows of a batch against *all* samples of the global
batch (N = the global batch size). `apply_gathered` runs a per-row loss function `fn(local,
gathered, offset)` in one of three modes, so that the loss code is written once:

- ``'global'`` (default): the inputs are global `jax.Array`s (possibly sharded over the mesh); `fn`
  sees the whole batch as both `local` and `gathered` with `offset = 0`. Under `jax.jit` XLA inserts
  the collectives. This is the exact loss and the exact gradient; the [N, N] logits are materialised
  (sharded by the partitioner if the inputs are).
- ``'local'``: `jax.shard_map` over the mesh's batch axes. Each device holds `b = N / n_shards` rows
  (`local`) and all-gathers the columns (`gathered`, [N, ...]) *with* gradient: the transpose of
  `all_gather` is a reduce-scatter, so every device's rows receive the gradient of every use of
  them. It equals ``'global'`` up to summation order and keeps only [b, N] logits per device.
- ``'reference'``: the released GRAM code (`model/gram.py` with the `@torch.no_grad`
  `concat_all_gather`): the gathered copies are detached, **even on one device**, so a term "local
  rows vs gathered columns" trains only the row side. With a mesh it runs like ``'local'`` with
  `stop_gradient` on the gathered copies; without one it runs like ``'global'`` with `stop_gradient`
  on `gathered`. Both give the same numbers and the same gradients, because the released code
  detaches the local rows' own gathered copy too.

Indexing: `offset` is the global index of the first local row (`shard_index * b`; 0 in global mode),
so the positive of local row r is column `offset + r` of any [b, N] logits matrix `fn` builds.

Outputs: `fn` returns a pytree whose leaves all have the per-row leading axis b; `apply_gathered`
returns them assembled into global arrays with leading axis N (sharded over the batch axes in the
shard_map modes). Reductions to scalars (means over rows) are left to the caller, outside the
shard_map, which sidesteps the replication rules of `psum` under `shard_map` with checks off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

GATHER_MODES = ("global", "local", "reference")


def check_gather_mode(gather_mode: str) -> None:
    """Raises ValueError naming the valid modes if `gather_mode` is not one of GATHER_MODES."""
    if gather_mode not in GATHER_MODES:
        raise ValueError(f"gather_mode={gather_mode!r}: expected one of {GATHER_MODES}")


def shard_map_unchecked(fn: Callable, *, mesh: Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """`jax.shard_map` with its replication/VMA checks off.

    The checks are off because an all-gathered value is varying-typed under `check_vma=True` and
    cannot leave through a replicated spec (jax's varying-axes check); our outputs are all
    row-sharded, so nothing is lost. (`jax.shard_map` is public from jax 0.7; setup.py requires
    jax >= 0.10.2.)
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _stop_gradient_floats(tree: Any) -> Any:
    """stop_gradient on floating leaves (masks and indices pass through unchanged)."""
    return jax.tree.map(
        lambda x: jax.lax.stop_gradient(x) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _check_batch_leaves(tree: Any, what: str) -> int:
    """Returns the common leading (batch) size of the leaves of `tree`; raises if they differ."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{what}: expected at least one array with a leading batch axis")
    sizes = {int(jnp.shape(x)[0]) if jnp.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        shapes = jax.tree.map(jnp.shape, tree)
        raise ValueError(f"{what}: every array needs the same leading batch axis, got {shapes}")
    return sizes.pop()


def batch_shard_count(mesh: Mesh, batch_axes: Sequence[str]) -> int:
    """Number of shards of the batch axis: the product of the sizes of `batch_axes` in `mesh`."""
    missing = [a for a in batch_axes if a not in mesh.shape]
    if missing:
        raise ValueError(
            f"batch_axes={tuple(batch_axes)}: axes {missing} are not in the mesh "
            f"(mesh axes {tuple(mesh.shape)})"
        )
    count = 1
    for a in batch_axes:
        count *= mesh.shape[a]
    return count


def apply_gathered(
    fn: Callable[[Any, Any, jax.Array], Any],
    tensors: Any,
    *,
    gather_mode: str = "global",
    mesh: Mesh | None = None,
    batch_axes: Sequence[str] = ("data",),
) -> Any:
    """Runs the per-row loss `fn(local, gathered, offset)` over the batch in `gather_mode`.

    Args:
      fn: maps (`local`: the pytree `tensors` restricted to this shard's b rows, `gathered`: the
        same pytree with all N rows, `offset`: int32 scalar global index of local row 0) to a pytree
        of arrays with leading axis b. It must not close over batch-sized arrays (they would not be
        sharded); pass them in `tensors`.
      tensors: pytree of arrays, each with the global batch N as leading axis (floats, bools, ints).
      gather_mode: 'global', 'local' or 'reference' (module docstring).
      mesh: required for 'local'; optional for 'reference' (without it the unsharded form is used).
      batch_axes: the mesh axes the batch is sharded over, major to minor.

    Returns:
      `fn`'s output pytree with leading axis N (rows in global order).
    """
    check_gather_mode(gather_mode)
    n = _check_batch_leaves(tensors, "apply_gathered(tensors)")
    batch_axes = tuple(batch_axes)
    if gather_mode == "global" or (gather_mode == "reference" and mesh is None):
        gathered = tensors if gather_mode == "global" else _stop_gradient_floats(tensors)
        return fn(tensors, gathered, jnp.zeros((), jnp.int32))
    if mesh is None:
        raise ValueError("gather_mode='local' needs a mesh (got mesh=None)")
    shards = batch_shard_count(mesh, batch_axes)
    if n % shards:
        raise ValueError(
            f"global batch {n} is not divisible by the {shards} shards of batch_axes={batch_axes}"
        )
    detach = gather_mode == "reference"
    axis = batch_axes if len(batch_axes) > 1 else batch_axes[0]
    row_spec = PartitionSpec(axis)

    def per_shard(local):
        gathered = jax.tree.map(lambda x: jax.lax.all_gather(x, axis, axis=0, tiled=True), local)
        if detach:
            gathered = _stop_gradient_floats(gathered)
        b = jax.tree.leaves(local)[0].shape[0]
        offset = (jax.lax.axis_index(axis) * b).astype(jnp.int32)
        return fn(local, gathered, offset)

    in_specs = (jax.tree.map(lambda _: row_spec, tensors),)
    out_shape = jax.eval_shape(
        lambda t: fn(t, t, jnp.zeros((), jnp.int32)), jax.tree.map(jnp.asarray, tensors)
    )
    out_specs = jax.tree.map(lambda _: row_spec, out_shape)
    mapped = shard_map_unchecked(per_shard, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    return mapped(tensors)
