"""GRAM's losses: the volume contrastive loss (A2D + D2A) and the `LOSSES` registry.

Reference: `model/gram.py` `forward_ret` of the released code (paper Sec. 3, Eq. 4-5).
The volume loss:

  logits_a2d[i, j] = -Vol(t_i, m_j) / tau   (row: anchor i; softmax over the data tuples j)
  logits_d2a[j, i] = -Vol(t_i, m_j) / tau   (row: data tuple j; softmax over the anchors i)
  L = 1/2 [ CE_eps(logits_a2d, y) + CE_eps(logits_d2a, y) ],   y = the same-sample column,

with PyTorch-style label smoothing eps (0.1 in the released code). Vol is `gram_jax.volume.
pairwise_volume`; a modality missing from sample j (`present[m, j] = False`) is dropped from the
Gram matrix of tuple j (never replaced by a fake vector). The released code labels the two terms the
other way round ("d2a" for the anchor-row softmax); the sum is the same.

Across devices the rows can be local and the columns gathered: see `gram_jax.losses.gather` for the
three modes ('global' exact, 'local' shard_map with gradient through all_gather, 'reference' the
released code's detached gathers, where the A2D term trains only the anchor and the D2A term only
the data).

The package, one home for every objective:
- here: `volume_contrastive_loss` (arrays in, the math) and the `LOSSES` registry;
- `inputs.py`: the one signature of every registry entry, `fn(LossInputs, **options) -> (loss,
  aux)` (`LossInputs`, `LossFn`, `option_names`);
- `baselines.py`: cosine anchored / all pairs, SigLIP's sigmoid, Symile, TRIANGLE's area;
- `cross_entropy.py`: the smoothed row-wise cross-entropy pieces the softmax losses share;
- `gather.py`: how a loss sees the batch across devices; `matching.py`: DAM and its hard negatives;
- `schedule.py`: symmetry breakers for training from scratch (a hybrid cosine term, a cosine
  warm-up, a matching-weight ramp) as per-step weights of the terms;
- `batch.py`: the loss of one training batch (`batch_loss`: the configured contrastive loss with its
  schedule + the matching loss on hard negatives), its term names and the ``config.loss`` checks.
The temperature is a model parameter: `gram_jax.models.temperature.Temperature`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gram_jax.losses import baselines
from gram_jax.losses.cross_entropy import positive_labels, smoothed_cross_entropy
from gram_jax.losses.gather import apply_gathered, check_gather_mode
from gram_jax.losses.inputs import LossFn, LossInputs, resolve_temperature
from gram_jax.volume import pairwise_volume, stack_others

__all__ = ["LOSSES", "LossFn", "LossInputs", "volume_contrastive_loss", "volume_loss"]


def volume_contrastive_loss(
    anchor: jax.Array,
    others: jax.Array | Sequence[jax.Array],
    *,
    temperature,
    present: jax.Array | Sequence[jax.Array] | None = None,
    label_smoothing: float = 0.1,
    gather_mode: str = "global",
    mesh: Mesh | None = None,
    batch_axes: Sequence[str] = ("data",),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRAM's volume contrastive loss, both directions (module docstring).

    Args:
      anchor: float[B, D] unit anchor embeddings (text). B is the global batch N; the inputs may
        be sharded global arrays.
      others: float[k-1, B, D] or a sequence of k-1 float[B, D]: the data modalities in Gram order
        (video, audio, subtitle, depth); unit vectors.
      temperature: tau, a float / float32[] / `Temperature` module; logits = -volume / tau.
      present: optional bool[k-1, B]; False drops that modality of that sample from its Gram matrix.
      label_smoothing: eps of the smoothed cross-entropy (0.1 as released).
      gather_mode: 'global' | 'local' | 'reference' (gram_jax.losses.gather).
      mesh, batch_axes: the mesh and the axes the batch is sharded over ('local' needs the mesh).

    Returns:
      (loss float32[], aux) with aux:
        'logits_a2d' float32[N, N]: row i = anchor i against every data tuple (positive: column i);
        'logits_d2a' float32[N, N]: row j = data tuple j against every anchor (positive: column j);
          in the shard_map modes both are row-sharded, each device holding its [b, N] block;
        'loss_a2d', 'loss_d2a' float32[]: the two cross-entropy terms;
        'positive_volume' float32[]: mean volume of the matched tuples (1 - GRAM alignment);
        'temperature' float32[]: tau used.
    """
    check_gather_mode(gather_mode)
    anchor = jnp.asarray(anchor)
    others = stack_others(others)
    if present is not None:
        present = jnp.asarray(
            jnp.stack([jnp.asarray(p) for p in present])
            if isinstance(present, list | tuple)
            else present
        ).astype(bool)
        if present.shape != others.shape[:2]:
            raise ValueError(
                f"present: expected bool[k-1, B] = {others.shape[:2]}, got shape {present.shape}"
            )
    if anchor.ndim != 2 or anchor.shape != others.shape[1:]:
        raise ValueError(
            f"anchor: expected float[B, D] matching others[k-1, B, D]={others.shape}, "
            f"got shape {anchor.shape}"
        )
    tau = resolve_temperature(temperature)

    # Batch axis first for every tensor, as apply_gathered shards axis 0.
    tensors = {"anchor": anchor, "others": jnp.swapaxes(others, 0, 1)}
    if present is not None:
        tensors["present"] = jnp.swapaxes(present, 0, 1)

    def per_rows(local, gathered, offset):
        def volumes(anchors, tuples):
            tuple_present = tuples.get("present")
            return pairwise_volume(
                anchors,
                jnp.swapaxes(tuples["others"], 0, 1),
                present=None if tuple_present is None else jnp.swapaxes(tuple_present, 0, 1),
            )

        rows = local["anchor"].shape[0]
        labels = positive_labels(offset, rows)
        # A2D: local anchors against all data tuples.
        vol_a2d = volumes(local["anchor"], gathered)
        logits_a2d = -vol_a2d / tau
        # D2A: all anchors against local data tuples, transposed to rows = local tuples. In 'global'
        # mode both sides are the same arrays, so the matrix is computed once.
        vol_d2a = vol_a2d.T if gathered is local else volumes(gathered["anchor"], local).T
        logits_d2a = -vol_d2a / tau
        positive = jnp.take_along_axis(vol_a2d, labels[:, None], axis=1)[:, 0]
        return {
            "logits_a2d": logits_a2d,
            "logits_d2a": logits_d2a,
            "ce_a2d": smoothed_cross_entropy(logits_a2d, labels, label_smoothing),
            "ce_d2a": smoothed_cross_entropy(logits_d2a, labels, label_smoothing),
            "positive_volume": positive,
        }

    out = apply_gathered(
        per_rows, tensors, gather_mode=gather_mode, mesh=mesh, batch_axes=batch_axes
    )
    loss_a2d = jnp.mean(out["ce_a2d"])
    loss_d2a = jnp.mean(out["ce_d2a"])
    aux = {
        "logits_a2d": out["logits_a2d"],
        "logits_d2a": out["logits_d2a"],
        "loss_a2d": loss_a2d,
        "loss_d2a": loss_d2a,
        "positive_volume": jnp.mean(jax.lax.stop_gradient(out["positive_volume"])),
        "temperature": tau,
    }
    return 0.5 * (loss_a2d + loss_d2a), aux


def volume_loss(inputs: LossInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The registry form of `volume_contrastive_loss` (anchor = `inputs.anchor`, others in
    `inputs.order`); aux as `volume_contrastive_loss`. The anchor's presence is not used (the
    anchor is always present in GRAM's data)."""
    others, masks = inputs.data_embeddings()
    stacked_present = None
    if any(m is not None for m in masks):
        stacked_present = jnp.stack(
            [
                jnp.ones(o.shape[0], bool) if m is None else m
                for o, m in zip(others, masks, strict=True)
            ]
        )
    return volume_contrastive_loss(
        inputs.embeddings[inputs.anchor],
        others,
        temperature=inputs.temperature,
        present=stacked_present,
        label_smoothing=inputs.label_smoothing,
        gather_mode=inputs.gather_mode,
        mesh=inputs.mesh,
        batch_axes=inputs.batch_axes,
    )


# config.loss.name -> loss; every entry has the `LossFn` signature.
LOSSES: dict[str, LossFn] = {
    "volume": volume_loss,
    "cosine_anchor": baselines.cosine_anchor_loss,
    "cosine_all_pairs": baselines.cosine_all_pairs_loss,
    "sigmoid": baselines.sigmoid_loss,
    "symile": baselines.symile_loss,
    "area": baselines.area_loss,
}
