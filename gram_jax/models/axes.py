"""Logical axis names of parameters and activations (the sharding vocabulary of the towers).

Every parameter made by :func:`param` carries the metadata key ``logical_axes`` (a tuple of names,
one per dimension; read them with :func:`logical_axes_tree`). ``gram_jax.parallel`` maps the names
to mesh axes ('data', 'fsdp', 'model'); a name without a rule is replicated. The names are listed
in the docstring of ``gram_jax.models.layers``.

Activations are annotated with :func:`constrain`, a no-op unless a caller has entered
:func:`logical_sharding` with a mesh and rules; names map to mesh axes by the same
``gram_jax.parallel.logical_to_spec`` as parameters (a dimension the mesh axes do not divide stays
replicated).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gram_jax.parallel import logical_to_spec

Array = jax.Array
DType = Any

LOGICAL_AXES_KEY = "logical_axes"
LAYERS_AXIS = "layers"

# ----------------------------------------------------------------------------------------------
# Logical axis names: parameters and activations.
# ----------------------------------------------------------------------------------------------

_RULES: contextvars.ContextVar = contextvars.ContextVar("gram_jax_logical_rules", default=None)


def param(
    rngs: nnx.Rngs,
    init: Callable[..., Array],
    shape: Sequence[int],
    axes: Sequence[str | None],
    param_dtype: DType = jnp.float32,
) -> nnx.Param:
    """A float parameter of ``shape`` initialised by ``init`` and tagged with logical ``axes``."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match parameter shape {tuple(shape)}")
    value = init(rngs.params(), tuple(shape), param_dtype)
    return nnx.Param(value, **{LOGICAL_AXES_KEY: tuple(axes)})


def logical_axes_tree(state: Any) -> Any:
    """Map an ``nnx.State`` (or any tree of ``nnx.Variable``) to a tree of logical-name tuples.

    Parameters stacked for scan-over-layers have one dimension more than their annotation; the
    extra leading dimension is named ``'layers'``. Variables without annotation (RNG state,
    counters) get ``None`` for every dimension, i.e. they are replicated.
    """

    def names(var):
        value = var[...] if isinstance(var, nnx.Variable) else var
        ndim = getattr(value, "ndim", 0)
        axes = var.get_metadata().get(LOGICAL_AXES_KEY) if isinstance(var, nnx.Variable) else None
        if axes is None:
            return (None,) * ndim
        axes = tuple(axes)
        while len(axes) < ndim:
            axes = (LAYERS_AXIS, *axes)
        if len(axes) != ndim:
            raise ValueError(f"variable of shape {value.shape} has logical axes {axes}")
        return axes

    return jax.tree.map(names, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def logical_sharding(mesh: jax.sharding.Mesh, rules: Sequence[tuple[str, Any]]):
    """Within this context :func:`constrain` shards activations on ``mesh`` by ``rules``.

    ``rules`` is a sequence of ``(logical_name, mesh_axis | tuple of mesh axes | None)``.
    """
    token = _RULES.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _RULES.reset(token)


def constrain(x: Array, names: Sequence[str | None]) -> Array:
    """Sharding constraint of activation ``x`` by logical ``names`` (no-op outside the context)."""
    ctx = _RULES.get()
    if ctx is None:
        return x
    mesh, rules = ctx
    spec = logical_to_spec(names, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
