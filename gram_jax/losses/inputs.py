"""The one signature of every alignment loss: `fn(inputs: LossInputs, **options) -> (loss, aux)`.

`LossInputs` holds what every `gram_jax.losses.LOSSES` entry reads (the embeddings, presence masks,
anchor and Gram order, temperature, label smoothing, gather settings, an rng); a loss's own knobs
(SigLIP's `bias`, Symile's `negative_sampling`, ...) are keyword-only parameters of the function,
which `config.loss.options` fills (`option_names` lists them, so the trainer can reject a typo
before tracing). A loss reads only the fields it needs: `label_smoothing` means nothing to the
sigmoid loss, `rng` only to Symile's permutations.

The dataclass is plain Python (not a pytree): build it inside the traced function, around traced
embeddings, and pass it straight to the loss.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gram_jax.losses.gather import check_gather_mode


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """Everything a registry loss reads (module docstring).

    Attributes:
      embeddings: modality name -> float[B, D] unit vectors (B = the global batch; may be sharded
        global arrays). Must hold `anchor` and every name of `order`.
      present: optional modality name -> bool[B]; a missing key means "always present"; False drops
        that modality of that sample (never replaced by a fake vector).
      temperature: tau: a float, float32[] or a `Temperature` module (called); logits scale 1/tau.
      anchor: the anchor modality (text in GRAM).
      order: the data modalities in Gram order, e.g. ('video', 'audio'); distinct from the anchor.
      label_smoothing: eps of every smoothed softmax cross-entropy (0.1 as released).
      gather_mode: 'global' | 'local' | 'reference' (`gram_jax.losses.gather`).
      mesh, batch_axes: the mesh and the axes the batch is sharded over ('local' needs the mesh).
      rng: optional PRNG key for losses that draw (Symile's negative permutations).
    """

    embeddings: Mapping[str, jax.Array]
    present: Mapping[str, jax.Array] | None = None
    _: dataclasses.KW_ONLY
    temperature: Any
    anchor: str = "text"
    order: Sequence[str] = ("video", "audio")
    label_smoothing: float = 0.1
    gather_mode: str = "global"
    mesh: Mesh | None = None
    batch_axes: Sequence[str] = ("data",)
    rng: jax.Array | None = None

    def __post_init__(self):
        object.__setattr__(self, "order", tuple(self.order))
        object.__setattr__(self, "batch_axes", tuple(self.batch_axes))
        check_gather_mode(self.gather_mode)
        names = (self.anchor, *self.order)
        if len(set(names)) != len(names) or not self.order:
            raise ValueError(
                f"anchor={self.anchor!r}, order={self.order}: expected distinct modalities"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """(anchor, *order): the modality of each position M of `stacked()`."""
        return (self.anchor, *self.order)

    def tau(self) -> jax.Array:
        """float32[] tau (`resolve_temperature` of `temperature`)."""
        return resolve_temperature(self.temperature)

    def data_embeddings(self) -> tuple[list[jax.Array], list[jax.Array | None]]:
        """The `order` embeddings (float[B, D] each) and their presence masks (bool[B] or None).

        Raises a ValueError naming the key if `embeddings` lacks the anchor or a modality of
        `order`, or if a shape disagrees with the anchor's.
        """
        for name in self.names:
            if name not in self.embeddings:
                raise ValueError(
                    f"embeddings: missing key {name!r} (have {sorted(self.embeddings)}; "
                    f"anchor={self.anchor!r}, order={self.order})"
                )
        shape = jnp.shape(self.embeddings[self.anchor])
        if len(shape) != 2:
            raise ValueError(
                f"embeddings[{self.anchor!r}]: expected float[B, D], got shape {shape}"
            )
        masks = []
        for name in self.names:
            if jnp.shape(self.embeddings[name]) != shape:
                raise ValueError(
                    f"embeddings[{name!r}]: expected shape {shape} like the anchor, got "
                    f"{jnp.shape(self.embeddings[name])}"
                )
            mask = None if self.present is None else self.present.get(name)
            if mask is not None:
                mask = jnp.asarray(mask).astype(bool)
                if mask.shape != shape[:1]:
                    raise ValueError(
                        f"present[{name!r}]: expected bool[{shape[0]}], got {mask.shape}"
                    )
            masks.append(mask)
        return [jnp.asarray(self.embeddings[n]) for n in self.order], masks[1:]

    def stacked(self) -> dict[str, jax.Array]:
        """{'emb': float32[B, M, D] in `names` order, 'present': bool[B, M]}: the batch-first
        layout `gram_jax.losses.gather.apply_gathered` shards (missing masks become all-True)."""
        others, masks = self.data_embeddings()
        anchor_present = None if self.present is None else self.present.get(self.anchor)
        b = others[0].shape[0]
        emb = jnp.stack([jnp.asarray(self.embeddings[self.anchor]), *others], axis=1)
        pres = jnp.stack(
            [
                jnp.ones(b, bool) if m is None else jnp.asarray(m, bool)
                for m in (anchor_present, *masks)
            ],
            axis=1,
        )
        return {"emb": emb.astype(jnp.float32), "present": pres}


class LossFn(Protocol):
    """A `LOSSES` entry: `fn(inputs, **options) -> (loss float32[], aux {name: array})`.

    `options` are the loss's own keyword-only parameters (`option_names`); aux holds scalars to
    log and, for the softmax losses over tuples (volume, area), 'logits_a2d'/'logits_d2a' [N, N]
    for the matching loss's hard negatives.
    """

    def __call__(
        self, inputs: LossInputs, /, **options: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...


def option_names(fn: LossFn) -> frozenset[str]:
    """The keyword-only parameters of a loss: the keys `config.loss.options` may set."""
    return frozenset(
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def resolve_temperature(temperature) -> jax.Array:
    """float32 scalar tau from a float, a 0-d array or a `Temperature` module (called)."""
    if callable(temperature):
        temperature = temperature()
    tau = jnp.asarray(temperature, jnp.float32)
    if tau.ndim != 0:
        raise ValueError(f"temperature: expected a scalar, got shape {tau.shape}")
    return tau
