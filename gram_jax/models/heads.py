"""Heads of the GRAM model: projection to the joint space, fusion condition tokens, matching head.

- ``ProjectionHead``: Linear(width -> D, no bias) then L2 normalisation (the reference's
  ``contra_head_*`` followed by ``F.normalize``, eps 1e-12), float32 output.
- ``ConditionTokens``: the per-modality token adapter of the fusion encoder (the released
  code): Linear(width -> H) + LayerNorm(eps 1e-12), plus frame (or clip) embeddings that are
  nearest-interpolated to the current frame count, plus a modality-type embedding.
- ``MatchingHead``: Linear(H, H) -> exact GELU -> LayerNorm(eps 1e-12) -> Linear(H, 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gram_jax.models import layers

Array = jax.Array


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(||x||, eps) along the last axis, float32 (as ``torch.nn.functional.normalize``)."""
    x = x.astype(jnp.float32)
    # max inside the sqrt: same values, but a finite gradient at x = 0 (sqrt'(0) is infinite).
    norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))
    return x / norm


class ProjectionHead(nnx.Module):
    """float[B, width] -> float32[B, D] unit vectors, ``proj.kernel``: [width, D]."""

    def __init__(self, width: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj = layers.Dense(
            width,
            dim,
            axes=("embed", None),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: Array) -> Array:
        return l2_normalize(self.proj(x))


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source rows of a nearest-neighbour resize from ``n_in`` to ``n_out`` rows.

    Row i reads floor(i * n_in / n_out), as ``torch.nn.functional.interpolate(mode='nearest')``
    that the reference uses for its frame embeddings (e.g. 2 trained rows shared by 8 frames).
    """
    return np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int32)


class ConditionTokens(nnx.Module):
    """Tokens of one modality [B, F, N, width] -> fusion tokens dtype[B, F*N, H].

    ``frame_embedding`` [max_frames, H] is added per frame (broadcast over its N tokens; rows are
    nearest-resized when F != max_frames); ``type_embedding`` [H] is added to every token. With
    ``max_frames=0`` (subtitles) there is no frame embedding and the input is [B, N, width].
    """

    def __init__(
        self, width: int, hidden: int, max_frames: int, *, dtype, param_dtype, rngs: nnx.Rngs
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear = layers.Dense(width, hidden, axes=("embed", None), **kw)
        self.norm = layers.LayerNorm(hidden, eps=1e-12, **kw)
        init = layers.default_kernel_init
        self.max_frames = max_frames
        if max_frames:
            self.frame_embedding = layers.param(
                rngs, init, (max_frames, hidden), ("length", "embed"), param_dtype
            )
        self.type_embedding = layers.param(rngs, init, (hidden,), ("embed",), param_dtype)

    def __call__(self, tokens: Array) -> Array:
        x = self.norm(self.linear(tokens))
        if self.max_frames:
            if x.ndim != 4:
                raise ValueError(f"ConditionTokens expects [B, F, N, width], got {tokens.shape}")
            frames = x.shape[1]
            table = self.frame_embedding[...]
            if frames != self.max_frames:
                table = table[nearest_indices(frames, self.max_frames)]
            x = x + table.astype(x.dtype)[None, :, None, :]
            x = x.reshape(x.shape[0], -1, x.shape[-1])
        return x + self.type_embedding[...].astype(x.dtype)


class MatchingHead(nnx.Module):
    """CLS of the fusion encoder float[B, H] -> float32 logits [B, 2] (index 1 = "matched")."""

    def __init__(self, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense = layers.Dense(hidden, hidden, axes=("embed", "mlp"), **kw)
        self.norm = layers.LayerNorm(hidden, eps=1e-12, axis_name="mlp", **kw)
        self.out = layers.Dense(hidden, 2, axes=("mlp", None), **kw)

    def __call__(self, x: Array) -> Array:
        h = self.norm(layers.activation("gelu")(self.dense(x)))
        return self.out(h).astype(jnp.float32)
