"""Symmetry breakers for training from scratch: a pairwise cosine term and per-step loss weights.

The Gram volume does not see the sign of a vector (Vol(t, v, a) = Vol(t, v, -a)) and is ~0 once any
pair is (anti)parallel, so trained from scratch it aligns modalities only up to sign and lets a
slow tower collapse (docs/results.md). The paper never meets this: it fine-tunes pretrained towers
whose signs are set. These ``config.loss`` keys break the symmetry (all off by default, so the
paper configs keep the paper's recipe):

- ``cosine_weight`` (lambda) and ``cosine_pairs`` ('anchor' | 'all_pairs'): the hybrid objective
  ``main + lambda * cosine``, the cosine term being the symmetric cosine InfoNCE of
  `gram_jax.losses.LOSSES['cosine_anchor' | 'cosine_all_pairs']` at the same temperature. Its
  gradient pulls each positive pair to cosine +1, which fixes the sign the volume leaves free and
  gives every tower a gradient of its own (the volume's gradient w.r.t. one vector scales with the
  area the other two span, so it vanishes for a tower whose partners have not aligned yet).
- ``cosine_warmup_steps`` (N): the staged recipe in one run. Steps < N train the cosine term alone
  (main weight 0, cosine weight 1); from step N on, ``main + cosine_weight * cosine``. Once the
  cosine warm-up has set the signs, the volume keeps them (a flip would cross volume 1).
- ``matching_start_step`` (S) and ``matching_ramp_steps`` (R): the matching (DAM) loss weight is
  0 before step S and rises linearly to ``matching_weight`` over R steps (at once when R = 0).
  Hard negatives drawn from an untrained model's logits are random, and the matching head then
  learns nothing (its loss sits at the entropy of its 1-in-3 labels); starting it after the
  contrastive part has learned gives it informative negatives.

``loss_weights`` gives the three weights at a (traced) step, so one jitted step serves every
phase: a schedule is one run, not two commands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from gram_jax.losses import LOSSES

COSINE_PAIRS = {"anchor": "cosine_anchor", "all_pairs": "cosine_all_pairs"}


def check_schedule(loss_cfg) -> None:
    """Raises ValueError naming the ``config.loss`` key whose value cannot be used."""
    pairs = loss_cfg.get("cosine_pairs", "anchor")
    if pairs not in COSINE_PAIRS:
        raise ValueError(
            f"config.loss.cosine_pairs={pairs!r}: expected one of {sorted(COSINE_PAIRS)}"
        )
    for key in ("cosine_weight", "cosine_warmup_steps", "matching_start_step"):
        if float(loss_cfg.get(key, 0)) < 0:
            raise ValueError(f"config.loss.{key}={loss_cfg.get(key)}: must be >= 0")
    if int(loss_cfg.get("matching_ramp_steps", 0)) < 0:
        raise ValueError(
            f"config.loss.matching_ramp_steps={loss_cfg.get('matching_ramp_steps')}: must be >= 0"
        )


def uses_cosine_term(loss_cfg) -> bool:
    """True when the cosine term is trained at some step (hybrid or staged)."""
    return (
        float(loss_cfg.get("cosine_weight", 0.0)) > 0
        or int(loss_cfg.get("cosine_warmup_steps", 0)) > 0
    )


def cosine_loss_fn(loss_cfg) -> Callable:
    """The `LOSSES` entry of the cosine term named by ``config.loss.cosine_pairs``."""
    check_schedule(loss_cfg)
    return LOSSES[COSINE_PAIRS[loss_cfg.get("cosine_pairs", "anchor")]]


def loss_weights(loss_cfg, step: jax.Array | int) -> dict[str, jax.Array]:
    """The weights of the main, cosine and matching terms at ``step`` (module docstring).

    Args:
      loss_cfg: ``config.loss`` (cosine_weight, cosine_warmup_steps, matching_weight,
        matching_start_step, matching_ramp_steps; missing keys take their defaults).
      step: int32[] steps done before this one (the train state's ``step``), may be traced.
    Returns:
      {'main', 'cosine', 'matching'}: float32[] each.
    """
    step = jnp.asarray(step, jnp.float32)
    warmup = float(loss_cfg.get("cosine_warmup_steps", 0))
    lam = float(loss_cfg.get("cosine_weight", 0.0))
    in_warmup = step < warmup
    start = float(loss_cfg.get("matching_start_step", 0))
    ramp = float(loss_cfg.get("matching_ramp_steps", 0))
    if ramp > 0:
        fraction = jnp.clip((step - start + 1.0) / ramp, 0.0, 1.0)
    else:
        fraction = (step >= start).astype(jnp.float32)
    return {
        "main": jnp.where(in_warmup, 0.0, 1.0),
        "cosine": jnp.where(in_warmup, 1.0, lam),
        "matching": float(loss_cfg.get("matching_weight", 0.0)) * fraction,
    }


def scheduled_contrastive(
    main_fn: Callable,
    inputs,
    options: Mapping[str, object] | None = None,
    *,
    loss_cfg,
    step: jax.Array | int,
    main_name: str,
) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array], dict[str, jax.Array]]:
    """weights['main'] * main + weights['cosine'] * cosine (the contrastive part of the step).

    Args:
      main_fn: the `LOSSES` entry of ``config.loss.name``, called as ``main_fn(inputs,
        **options)``; the cosine term is called on the same `LossInputs` (without the options,
        which belong to the main loss).
      inputs: a `gram_jax.losses.LossInputs`.
      options: ``config.loss.options`` of the main loss.
      loss_cfg, step: as `loss_weights`.
      main_name: the term name of the main loss in the returned terms (``loss_<name>``).
    Returns:
      (total float32[], terms {'loss_<main_name>', 'loss_cosine' when used}, aux of the main loss,
      weights of `loss_weights`).
    """
    weights = loss_weights(loss_cfg, step)
    main, aux = main_fn(inputs, **dict(options or {}))
    terms = {f"loss_{main_name}": main}
    total = weights["main"] * main
    if uses_cosine_term(loss_cfg):
        cosine, _ = cosine_loss_fn(loss_cfg)(inputs)
        terms["loss_cosine"] = cosine
        total = total + weights["cosine"] * cosine
    return total, terms, aux, weights
