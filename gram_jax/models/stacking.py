"""Layer stacking: build N layers with params stacked on a leading 'layers' axis and run them
with ``nnx.scan`` (one compiled body) or unrolled, optionally rematerialised.

Functional use: inside ``jax.grad`` merge the model with ``nnx.merge(graphdef, params, rest,
copy=True)`` (or pure dicts): ``nnx.scan`` refuses Variables created at an outer trace level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

Array = jax.Array


REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute everything in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def stack_layers(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs):
    """Build ``num_layers`` independent layers whose params are stacked on a leading axis.

    ``make_layer(rngs) -> Module`` is called under ``nnx.vmap`` with split RNG keys, so each layer
    gets its own initialisation and its own dropout stream. The result is one module whose every
    array has a leading dimension ``num_layers``; run it with :func:`apply_layers`.
    """

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(r):
        return make_layer(r)

    return create(rngs)


def apply_layers(
    layers: nnx.Module,
    x: Array,
    step: Callable[[nnx.Module, Array], Array],
    *,
    scan: bool = True,
    remat_policy: str = "none",
) -> Array:
    """Run stacked ``layers`` (from :func:`stack_layers`) over carry ``x``.

    ``step(layer, x) -> x`` applies one layer; broadcast inputs (masks, biases, context) are closed
    over. ``scan=True`` compiles one layer body in a ``scan`` loop; ``scan=False`` unrolls it
    (faster compile-time-insensitive kernels, same parameters and results). ``remat_policy`` is a
    key of ``REMAT_POLICIES``.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(
            f"unknown remat_policy {remat_policy!r}; expected one of {sorted(REMAT_POLICIES)}"
        )
    body = step
    if remat_policy != "none":
        body = nnx.remat(step, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)

    def scan_body(carry, layer):
        return body(layer, carry)

    run = nnx.scan(
        scan_body, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, unroll=1 if scan else True
    )
    return run(x, layers)
