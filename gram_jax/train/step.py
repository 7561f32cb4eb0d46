"""The pure update step: (train state, global batch) -> (new train state, metrics).

The train state is a plain dict pytree (checkpointed as is):

- ``params``: pure dict of the model's ``nnx.Param`` arrays (float32);
- ``model_state``: pure dict of every other model variable (dropout RNG streams, fixed temperature);
- ``opt_state``: the optax state of `gram_jax.optim.make_optimizer`;
- ``step``: int32[] train steps done;
- ``rng``: uint32[2] raw key of the run; step ``s`` uses ``fold_in(rng, s)``, so a resumed run draws
  the same hard negatives as an uninterrupted one.

The step merges the model, runs its towers, takes the loss of the batch from
`gram_jax.losses.batch.batch_loss` (GRAM's volume contrastive loss by default + ``matching_weight``
x the matching loss on hard negatives) and applies the optimizer.
The step is jitted with `jax.jit(..., donate_argnums=0)` and explicit in/out shardings (not
`nnx.jit`: its graph traversal costs ~0.6 ms of Python per step, measured).

Non-finite guard: metrics carry ``nonfinite``, an int32 bitmask over `term_names(config)` (bit i set
= term i is NaN/inf this step). The last name, ``STATE_TERM``, covers the *new* parameters and
optimizer state: one fused all-finite reduction over them, so a state is known finite before it is
ever saved (a finite loss can still produce an infinite update). The loop checks the mask
(`gram_jax.train.guard`) before logging or saving.

Skipped data: with ``data.bad_data='skip'`` a media item that cannot be decoded arrives with
``present_<m>=False`` on a valid row; the step counts those rows per media modality
(``skipped_<m>``, int32, summed over the global batch) so the loop can report them (under
``bad_data='raise'`` such a row cannot exist and the counts are 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gram_jax import parallel
from gram_jax.losses.batch import batch_loss, check_loss_config
from gram_jax.losses.batch import term_names as loss_term_names
from gram_jax.models.axes import logical_sharding
from gram_jax.models.gram import merge_model

# The guard's name for "the new parameters or optimizer state hold NaN/inf".
STATE_TERM = "params_or_opt_state"
# Media modalities whose undecodable items bad_data='skip' masks (text is never "bad": an empty
# caption or subtitle is a missing modality, not a decoding failure).
MEDIA_MODALITIES = ("video", "audio")


def term_names(config) -> tuple[str, ...]:
    """The values the guard checks, in bitmask order: the loss terms of
    `gram_jax.losses.batch.term_names`, then loss, grad_norm, STATE_TERM."""
    return (*loss_term_names(config.loss), "loss", "grad_norm", STATE_TERM)


def all_finite(tree) -> jax.Array:
    """bool[]: every element of every floating leaf of `tree` is finite (one fused reduction)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def skipped_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """{'skipped_<m>': int32[]} rows that are valid but lack media modality m (masked bad items)."""
    valid = batch.get("valid")
    counts = {}
    for m in MEDIA_MODALITIES:
        if f"present_{m}" in batch and valid is not None:
            missing = jnp.logical_and(valid, jnp.logical_not(batch[f"present_{m}"]))
            counts[f"skipped_{m}"] = missing.sum(dtype=jnp.int32)
    return counts


def make_loss_fn(config, graphdef, abstract_params, abstract_rest, mesh) -> Callable:
    """loss_fn(params, model_state, batch, rng, step) -> (total, (terms, extras, model_state)).

    Merges the model, runs its towers in train mode and hands their outputs to
    `gram_jax.losses.batch.batch_loss`; ``step`` (int32[]) drives the loss schedule.
    """
    loss_cfg = config.loss
    check_loss_config(loss_cfg)

    def loss_fn(params, model_state, batch, rng, step=0):
        model = merge_model(graphdef, abstract_params, abstract_rest, params, model_state)
        encoded = model.encode(batch, train=True)
        total, terms, extras = batch_loss(
            loss_cfg,
            encoded.embeddings,
            encoded.condition,
            encoded.condition_mask,
            batch,
            temperature=model.temperature(),
            match_logits_fn=functools.partial(model.match_logits, train=True),
            rng=rng,
            step=step,
            mesh=mesh,
        )
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return total, (terms, extras, nnx.to_pure_dict(rest))

    return loss_fn


def make_train_step(
    config,
    graphdef,
    abstract_params,
    abstract_rest,
    tx: optax.GradientTransformation,
    mesh,
    state_sharding,
    batch_sharding,
    lr_schedules: Mapping[str, Callable] | None = None,
):
    """The jitted step(state, batch) -> (state, metrics); `state` is donated."""
    loss_fn = make_loss_fn(config, graphdef, abstract_params, abstract_rest, mesh)
    names = term_names(config)

    def step(state, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        with logical_sharding(mesh, parallel.LOGICAL_AXIS_RULES):
            (total, (terms, extras, model_state)), grads = jax.value_and_grad(
                loss_fn, has_aux=True
            )(state["params"], state["model_state"], batch, rng, state["step"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = dict(terms, loss=total, grad_norm=optax.tree.norm(grads), **extras)
        finite = {n: jnp.isfinite(metrics[n]) for n in names if n != STATE_TERM}
        finite[STATE_TERM] = all_finite((params, opt_state))
        bits = [jnp.where(finite[n], 0, 1 << i) for i, n in enumerate(names)]
        metrics["nonfinite"] = jnp.asarray(sum(bits), jnp.int32)
        # Always counted (two tiny reductions), so the program does not depend on bad_data.
        metrics.update(skipped_counts(batch))
        for group, schedule in (lr_schedules or {}).items():
            metrics[f"lr_{group}"] = schedule(state["step"])
        new_state = dict(
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            step=state["step"] + 1,
            rng=state["rng"],
        )
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, parallel.replicated(mesh)),
        donate_argnums=0,
    )
