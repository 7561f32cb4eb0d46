"""The loss of one training batch, from the towers' outputs to (total, terms, extras).

    total = w_main * LOSSES[loss.name](LossInputs(...), **loss.options)
          + w_cosine * cosine term                       (only with a cosine term configured)
          + w_matching * matching (DAM) loss on hard negatives drawn from the contrastive logits,

the weights ``w`` being those of `gram_jax.losses.schedule.loss_weights` at the step (constant
without schedule keys; GRAM's volume contrastive loss with ``matching_weight`` 0.1 by default, the
released code's recipe). The model is not touched here: the caller passes what its towers
produced and the matching head as a function, so the train step only merges the model, calls the
towers and this, and applies the optimizer.

`check_loss_config` rejects a bad ``config.loss`` (unknown name, options the loss does not
accept, a bad schedule) before anything is traced; `term_names` lists the terms ``batch_loss``
returns, in the order the train step's non-finite bitmask uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gram_jax import parallel
from gram_jax.losses import LOSSES, LossFn, LossInputs
from gram_jax.losses.inputs import option_names
from gram_jax.losses.matching import build_matching_batch, matching_loss, sample_hard_negatives
from gram_jax.losses.schedule import check_schedule, scheduled_contrastive, uses_cosine_term
from gram_jax.models.modalities import data_modalities

# Scalar entries of a loss's aux that the train step reports (detached) next to the terms.
EXTRAS = ("positive_volume", "temperature")


def term_names(loss_cfg) -> tuple[str, ...]:
    """The names of the terms `batch_loss` returns: ``loss_<name>``, then ``loss_cosine`` with a
    cosine term, then ``loss_matching`` when ``matching_weight > 0``."""
    names = [f"loss_{loss_cfg.name}"]
    if uses_cosine_term(loss_cfg):
        names.append("loss_cosine")
    if float(loss_cfg.matching_weight) > 0:
        names.append("loss_matching")
    return tuple(names)


def loss_options(loss_cfg) -> dict:
    """``config.loss.options`` as plain keyword arguments of the LOSSES entry ({} when unset)."""
    options = loss_cfg.get("options", None)
    if options is None:
        return {}
    return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def check_loss_options(loss_cfg, fn: LossFn) -> None:
    """Rejects ``config.loss.options`` keys the loss does not name, before tracing, with the
    loss's options in the message (calling it would fail later with a bare TypeError)."""
    named = option_names(fn)
    unknown = sorted(set(loss_options(loss_cfg)) - named)
    if unknown:
        raise ValueError(
            f"config.loss.options: {unknown} are not options of loss {loss_cfg.name!r}; "
            f"it accepts {sorted(named)}"
        )


def check_loss_config(loss_cfg) -> LossFn:
    """The LOSSES entry of ``config.loss.name`` once its options and schedule are checked.

    Raises ``ValueError`` naming the ``config.loss`` key at fault.
    """
    if loss_cfg.name not in LOSSES:
        raise ValueError(f"config.loss.name={loss_cfg.name!r}: expected one of {sorted(LOSSES)}")
    contrastive = LOSSES[loss_cfg.name]
    check_loss_options(loss_cfg, contrastive)
    check_schedule(loss_cfg)
    return contrastive


def batch_loss(
    loss_cfg,
    embeddings: Mapping[str, jax.Array],
    condition: jax.Array | None,
    condition_mask: jax.Array | None,
    batch: Mapping[str, jax.Array],
    *,
    temperature: jax.Array,
    match_logits_fn: Callable[..., jax.Array],
    rng: jax.Array,
    step: jax.Array | int,
    mesh,
) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
    """The loss of one batch (module docstring) -> (total float32[], terms, extras).

    Args:
      loss_cfg: ``config.loss``.
      embeddings: {modality: float32[B, D]} unit vectors of the towers (train mode).
      condition, condition_mask: the fusion tokens dtype[B, N, H] / int32[B, N] the matching head
        attends to (None when ``matching_weight`` is 0).
      batch: the global batch (docs/contracts.md): ``present_<m>`` bool[B] masks and, for
        matching, the anchor's ``<anchor>_ids`` / ``<anchor>_mask`` int32[B, L].
      temperature: tau, float32[].
      match_logits_fn: ``(text_ids [K, L], text_mask [K, L], condition [K, N, H],
        condition_mask [K, N]) -> float[K, 2]``, the matching head in train mode.
      rng: this step's key; split into the loss's key and the hard negatives' key.
      step: int32[] train steps done (drives the schedule).
      mesh: the device mesh the batch is sharded on (``parallel.BATCH_AXES``).

    Returns:
      total float32[]; terms {name: float32[]} named as `term_names`; extras {name: float32[]}
      the loss's scalar aux of ``EXTRAS``, gradient stopped.
    """
    contrastive = check_loss_config(loss_cfg)
    weight = float(loss_cfg.matching_weight)
    present = {m: batch[f"present_{m}"] for m in embeddings if f"present_{m}" in batch}
    rng_loss, rng_negatives = jax.random.split(rng)
    inputs = LossInputs(
        embeddings,
        present,
        temperature=temperature,
        anchor=loss_cfg.anchor,
        order=data_modalities(embeddings, loss_cfg.anchor),
        label_smoothing=float(loss_cfg.label_smoothing),
        gather_mode=loss_cfg.gather_mode,
        mesh=mesh,
        batch_axes=parallel.BATCH_AXES,
        rng=rng_loss,
    )
    total, terms, aux, weights = scheduled_contrastive(
        contrastive, inputs, loss_options(loss_cfg), loss_cfg=loss_cfg, step=step,
        main_name=loss_cfg.name,
    )  # fmt: skip
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
        logits = match_logits_fn(
            batch[f"{anchor}_ids"][index["text_index"]],
            batch[f"{anchor}_mask"][index["text_index"]],
            condition[index["data_index"]],
            condition_mask[index["data_index"]],
        )
        terms["loss_matching"] = matching_loss(logits.astype(jnp.float32), index["labels"])
        total = total + weights["matching"] * terms["loss_matching"]
    extras: dict[str, Any] = {
        k: jax.lax.stop_gradient(v) for k, v in aux.items() if k in EXTRAS and jnp.ndim(v) == 0
    }
    return total, terms, extras
