"""The pure update step: (train state, global batch) -> (new train state, metrics).

The train state is a plain dict pytree (checkpointed as is):

- ``params``: pure dict of the model's ``nnx.Param`` arrays (float32);
- ``model_state``: pure dict of every other model variable (dropout RNG streams, fixed temperature);
- ``opt_state``: the optax state of `gram_jax.optim.make_optimizer`;
- ``step``: int32[] train steps done;
- ``rng``: uint32[2] raw key of the run; step ``s`` uses ``fold_in(rng, s)``, so a resumed run draws
  the same hard negatives as an uninterrupted one.

Loss = ``LOSSES[config.loss.name](LossInputs(...), **config.loss.options)`` (GRAM's volume
contrastive loss by default) + ``matching_weight`` x the matching (DAM) loss on hard negatives drawn
from the contrastive logits.
The step is jitted with `jax.jit(..., donate_argnums=0)` and explicit in/out shardings (not
`nnx.jit`: its graph traversal costs ~0.6 ms of Python per step, measured).

Non-finite guard: metrics carry ``nonfinite``, an int32 bitmask over `term_names(config)` (bit i set
= term i is NaN/inf this step). The last name, ``STATE_TERM``, covers the *new* parameters and
optimizer state: one fused all-finite reduction over them, so a state is known finite before it is
ever saved (a finite loss can still produce an infinite update). The loop checks the mask
(`check_finite`, `gram_jax.train.guard`) before logging or saving.

Skipped data: with ``data.bad_data='skip'`` a media item that cannot be decoded arrives with
``present_<m>=False`` on a valid row; the step counts those rows per media modality
(``skipped_<m>``, int32, summed over the global batch) so the loop can report them (under
``bad_data='raise'`` such a row cannot exist and the counts are 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gram_jax import parallel
from gram_jax.losses import LOSSES, LossFn, LossInputs
from gram_jax.losses.inputs import option_names
from gram_jax.losses.matching import build_matching_batch, matching_loss, sample_hard_negatives
from gram_jax.losses.schedule import check_schedule, scheduled_contrastive, uses_cosine_term
from gram_jax.models.axes import logical_sharding
from gram_jax.models.gram import merge_model
from gram_jax.models.modalities import data_modalities

# The guard's name for "the new parameters or optimizer state hold NaN/inf".
STATE_TERM = "params_or_opt_state"
# Media modalities whose undecodable items bad_data='skip' masks (text is never "bad": an empty
# caption or subtitle is a missing modality, not a decoding failure).
MEDIA_MODALITIES = ("video", "audio")


class NonFiniteLossError(FloatingPointError):
    """A loss term, the gradient norm or the new train state became NaN or infinite."""


def term_names(config) -> tuple[str, ...]:
    """The values the guard checks, in bitmask order: loss terms, loss, grad_norm, STATE_TERM."""
    names = [f"loss_{config.loss.name}"]
    if uses_cosine_term(config.loss):
        names.append("loss_cosine")
    if float(config.loss.matching_weight) > 0:
        names.append("loss_matching")
    return (*names, "loss", "grad_norm", STATE_TERM)


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

    ``step`` (int32[]) drives the loss schedule of `gram_jax.losses.schedule` (cosine warm-up,
    hybrid cosine term, matching-weight ramp); without those keys the weights are constant.
    """
    loss_cfg = config.loss
    if loss_cfg.name not in LOSSES:
        raise ValueError(f"config.loss.name={loss_cfg.name!r}: expected one of {sorted(LOSSES)}")
    contrastive = LOSSES[loss_cfg.name]
    _check_loss_options(loss_cfg, contrastive)
    options = _loss_options(loss_cfg)
    check_schedule(loss_cfg)
    weight = float(loss_cfg.matching_weight)

    def loss_fn(params, model_state, batch, rng, step=0):
        model = merge_model(graphdef, abstract_params, abstract_rest, params, model_state)
        encoded = model.encode(batch, train=True)
        embeddings = encoded.embeddings
        present = {m: batch[f"present_{m}"] for m in embeddings if f"present_{m}" in batch}
        rng_loss, rng_negatives = jax.random.split(rng)
        inputs = LossInputs(
            embeddings,
            present,
            temperature=model.temperature(),
            anchor=loss_cfg.anchor,
            order=data_modalities(embeddings, loss_cfg.anchor),
            label_smoothing=float(loss_cfg.label_smoothing),
            gather_mode=loss_cfg.gather_mode,
            mesh=mesh,
            batch_axes=parallel.BATCH_AXES,
            rng=rng_loss,
        )
        total, terms, aux, weights = scheduled_contrastive(
            contrastive, inputs, options, loss_cfg=loss_cfg, step=step, main_name=loss_cfg.name
        )
        if weight > 0:
            if "logits_a2d" not in aux or "logits_d2a" not in aux:
                raise ValueError(
                    f"config.loss.matching_weight={weight} needs the contrastive logits for hard "
                    f"negatives, but loss {loss_cfg.name!r} returns only {sorted(aux)}; set "
                    "config.loss.matching_weight=0"
                )
            neg_data, neg_text = sample_hard_negatives(
                rng_negatives, aux["logits_a2d"], aux["logits_d2a"]
            )
            index = build_matching_batch(neg_data, neg_text)
            anchor = loss_cfg.anchor
            logits = model.match_logits(
                batch[f"{anchor}_ids"][index["text_index"]],
                batch[f"{anchor}_mask"][index["text_index"]],
                encoded.condition[index["data_index"]],
                encoded.condition_mask[index["data_index"]],
                train=True,
            )
            terms["loss_matching"] = matching_loss(logits.astype(jnp.float32), index["labels"])
            total = total + weights["matching"] * terms["loss_matching"]
        extras = {
            k: jax.lax.stop_gradient(v)
            for k, v in aux.items()
            if k in ("positive_volume", "temperature") and jnp.ndim(v) == 0
        }
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


def nonfinite_terms(metrics: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    """{name: value} of the terms whose `nonfinite` bit is set (STATE_TERM's value is nan)."""
    mask = int(np.asarray(metrics["nonfinite"]))
    return {
        n: float(np.asarray(metrics[n])) if n in metrics else float("nan")
        for i, n in enumerate(names)
        if mask & (1 << i)
    }


def check_finite(step_metrics: list[tuple[int, Mapping[str, Any]]], names: tuple[str, ...]):
    """Raises NonFiniteLossError naming the first bad step and term.

    `step_metrics` holds (step index, metrics) pairs; the error names step index + 1, the step
    number of the state that update produced (the numbering of the logs and checkpoints).
    """
    for step, metrics in step_metrics:
        bad = nonfinite_terms(metrics, names)
        if bad:
            raise NonFiniteLossError(
                f"non-finite values at step {step + 1}: {', '.join(bad)} = {bad}; stopping"
            )


def _loss_options(loss_cfg) -> dict:
    """config.loss.options as plain keyword arguments of the LOSSES entry."""
    options = loss_cfg.get("options", None)
    if options is None:
        return {}
    return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def _check_loss_options(loss_cfg, fn: LossFn) -> None:
    """Rejects config.loss.options keys the loss does not name, before tracing, with the loss's
    options in the message (calling it would fail later with a bare TypeError)."""
    named = option_names(fn)
    unknown = sorted(set(_loss_options(loss_cfg)) - named)
    if unknown:
        raise ValueError(
            f"config.loss.options: {unknown} are not options of loss {loss_cfg.name!r}; "
            f"it accepts {sorted(named)}"
        )
