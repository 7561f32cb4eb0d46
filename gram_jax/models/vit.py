"""Vision/video tower: a ViT compatible with timm's EVA (EVA01-CLIP-g/14's visual tower).

Architecture (timm ``eva_giant_patch14_clip_224`` / EVA-CLIP ``EVA01-CLIP-g-14`` visual tower):
patch embedding (a conv with stride = kernel = patch, with bias), a CLS token, learned absolute
position embeddings (CLS included), pre-LN blocks (LayerNorm eps 1e-6, attention with query and
value bias but no key bias, exact-GELU MLP, drop-path with the linear depth rule of timm and
EVA-CLIP), a final LayerNorm. No RoPE, no layer scale, no projection head: GRAM reads the
normalised tokens and projects the CLS token itself (as the released vision encoder does).

Video is handled per frame: ``[B, F, H, W, 3]`` is folded to ``[B*F, H, W, 3]``, encoded, and
unfolded. The tower returns the per-frame CLS tokens, all tokens (the fusion condition) and their
mean over frames.

Position embeddings at another image size: the patch-grid part of the table is resized with
``jax.image.resize(method='bicubic', antialias=True)`` (Keys cubic, a = -0.5, half-pixel centres,
antialiased when shrinking) -- the same kernel as timm's ``resample_abs_pos_embed`` default
(torch bicubic with ``antialias=True``); the CLS entry is kept. tests/test_vit.py checks it
against timm's dynamic-size forward.

Parameters (float32 by default) with logical axes:
  ``patch_embed.kernel`` [p, p, 3, W] ('patch', 'patch', 'channels', 'embed'), ``.bias`` [W];
  ``cls_token`` [W] ('embed',); ``pos_embed`` [1 + G*G, W] ('length', 'embed');
  ``blocks.*`` stacked on a leading 'layers' axis (see ``layers.stack_layers``);
  ``norm.scale`` / ``norm.bias`` [W].
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gram_jax.models import layers

Array = jax.Array

# Width, depth, heads and MLP hidden size of each size. 'giant' is EVA01-CLIP-g/14 (mlp ratio
# 4.3637 -> int(1408 * 4.3637) = 6144, as in timm's 6144 / 1408); 'large' is ViT-L/14, 'base'
# ViT-B/16; 'tiny' exists for tests.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(width=64, depth=2, heads=4, mlp_dim=279, patch_size=14, image_size=56),
    "base": dict(width=768, depth=12, heads=12, mlp_dim=3072, patch_size=16, image_size=224),
    "large": dict(width=1024, depth=24, heads=16, mlp_dim=4096, patch_size=14, image_size=224),
    "giant": dict(width=1408, depth=40, heads=16, mlp_dim=6144, patch_size=14, image_size=224),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of the vision tower (see ``vit_config`` for the named sizes)."""

    width: int = 1408
    depth: int = 40
    heads: int = 16
    mlp_dim: int = 6144
    patch_size: int = 14
    image_size: int = 224  # the size the position table is built for
    eps: float = 1e-6
    drop_path_rate: float = 0.0  # of the last block; block i gets rate * i / (depth - 1)
    dropout_rate: float = 0.0  # after the attention and MLP output projections
    attn_dropout_rate: float = 0.0
    dtype: Any = jnp.float32  # matmul/activation dtype (bf16 on accelerators)
    param_dtype: Any = jnp.float32
    remat_policy: str = "none"  # a key of layers.REMAT_POLICIES
    scan_layers: bool = True  # False unrolls the layer loop (same parameters)
    # What a frame pools to: 'cls' (EVA-CLIP, GRAM) or 'mean' over the patch tokens (timm's
    # global_pool='avg'). A tiny tower trained from scratch starts with a CLS output that barely
    # depends on the image (it mostly carries the CLS and position embeddings); the mean over
    # patches escapes that plateau sooner (docs/results.md, "What it took to train at all").
    pool: str = "cls"
    # Output channels of a convolutional stem (Xiao et al. 2021, "Early convolutions help
    # transformers see better"): one 3x3 stride-2 conv + GELU per entry, then the per-position
    # projection to ``width``; the total stride 2**len must equal ``patch_size``. Empty (EVA, the
    # reference) patchifies with one linear map. The TriDigits towers, trained from scratch on a
    # few thousand moving digits, use one: a patchify stem leaves them at chance (docs/results.md).
    stem_channels: tuple[int, ...] = ()

    def __post_init__(self):
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"ViTConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.stem_channels and 2 ** len(self.stem_channels) != self.patch_size:
            raise ValueError(
                f"ViTConfig: a conv stem of {len(self.stem_channels)} stride-2 convs has stride "
                f"{2 ** len(self.stem_channels)}, but patch_size is {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"ViTConfig: width {self.width} not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size {self.image_size} not divisible by patch {self.patch_size}"
            )
        if self.remat_policy not in layers.REMAT_POLICIES:
            raise ValueError(
                f"ViTConfig.remat_policy {self.remat_policy!r}: expected one of "
                f"{sorted(layers.REMAT_POLICIES)}"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(
                f"ViTConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}"
            )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def vit_config(size: str = "giant", **overrides: Any) -> ViTConfig:
    """The ``ViTConfig`` of a named size ('tiny', 'base', 'large', 'giant') with ``overrides``."""
    if size not in SIZES:
        raise ValueError(f"unknown ViT size {size!r}; expected one of {sorted(SIZES)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ViTConfig)}
    if unknown:
        raise ValueError(f"vit_config: unknown keys {sorted(unknown)}")
    return ViTConfig(**{**SIZES[size], **overrides})


class VisionOutput(NamedTuple):
    """``cls``: float32[B, F, W] (per-frame pooled: the CLS token, or the patch mean when
    ``pool='mean'``); ``tokens``: dtype[B, F, 1 + P, W]; ``pooled``: float32[B, W]."""

    cls: Array
    tokens: Array
    pooled: Array


def drop_path_rates(rate: float, depth: int) -> np.ndarray:
    """Linear stochastic-depth rule of timm/EVA-CLIP: float32[depth] from 0 to ``rate``."""
    return np.linspace(0.0, rate, depth, dtype=np.float32)


class EvaBlock(nnx.Module):
    """Pre-LN block x + DP(Attn(LN(x))), x + DP(MLP(LN(x))): dtype[N, L, W] -> dtype[N, L, W].

    The drop-path rate is a call argument (a traced scalar inside the layer scan) because every
    block of the stack has its own rate while all blocks share one scanned body.
    """

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.norm1 = layers.LayerNorm(cfg.width, eps=cfg.eps, **kw)
        # EVA has a query and a value bias but no key bias (a key bias cannot change softmax).
        self.attn = layers.Attention(
            cfg.width,
            cfg.heads,
            qkv_bias=(True, False, True),
            attn_dropout_rate=cfg.attn_dropout_rate,
            **kw,
        )
        self.attn_dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)
        self.norm2 = layers.LayerNorm(cfg.width, eps=cfg.eps, **kw)
        self.mlp = layers.MLP(
            cfg.width, cfg.mlp_dim, activation_name="gelu", dropout_rate=cfg.dropout_rate, **kw
        )
        self.drop_rng = rngs["dropout"].fork()

    def _drop_path(self, x: Array, rate: Array, train: bool) -> Array:
        if not train:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.drop_rng(), 1.0 - rate, shape)
        return jnp.where(keep, x / (1.0 - rate).astype(x.dtype), jnp.zeros_like(x))

    def __call__(self, x: Array, drop_rate: Array, *, train: bool = False) -> Array:
        h = self.attn(self.norm1(x), train=train)
        x = x + self._drop_path(self.attn_dropout(h, train=train), drop_rate, train)
        x = x + self._drop_path(self.mlp(self.norm2(x), train=train), drop_rate, train)
        return layers.constrain(x, ("batch", "length", "embed"))


def resize_pos_embed(pos_embed: Array, grid_hw: tuple[int, int], num_prefix: int = 1) -> Array:
    """Resize an absolute position table [num_prefix + G*G, W] to [num_prefix + h*w, W].

    Square source grid; bicubic with antialiasing (see the module docstring). Identity when the
    grid is unchanged.
    """
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    side = int(round(grid.shape[0] ** 0.5))
    if side * side != grid.shape[0]:
        raise ValueError(f"pos_embed patch part has {grid.shape[0]} rows, not a square grid")
    if (side, side) == tuple(grid_hw):
        return pos_embed
    grid = grid.reshape(side, side, -1).astype(jnp.float32)
    grid = jax.image.resize(grid, (*grid_hw, grid.shape[-1]), method="bicubic", antialias=True)
    grid = grid.reshape(grid_hw[0] * grid_hw[1], -1).astype(pos_embed.dtype)
    return jnp.concatenate([prefix, grid], axis=0)


class ConvLayer(nnx.Module):
    """3x3 stride-2 'SAME' convolution + bias + GELU: dtype[N, H, W, C_in] -> [N, H/2, W/2, C_out].

    ``kernel``: [3, 3, C_in, C_out] ('patch', 'patch', 'conv_in', 'conv_out'), He-normal
    initialised (the GELU halves the variance, as a ReLU does); ``bias``: [C_out] ('conv_out',).
    """

    def __init__(self, c_in: int, c_out: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
        self.kernel = layers.param(
            rngs, init, (3, 3, c_in, c_out), ("patch", "patch", "conv_in", "conv_out"), param_dtype
        )
        self.bias = layers.param(rngs, nnx.initializers.zeros, (c_out,), ("conv_out",), param_dtype)
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(2, 2),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return jax.nn.gelu(y + self.bias[...].astype(self.dtype), approximate=False)


class VisionTransformer(nnx.Module):
    """EVA-compatible ViT applied per frame.

    ``__call__(frames float[B, F, H, W, 3], *, train=False, frame_mask=None) -> VisionOutput``.
    ``frames`` are already normalised (CLIP mean/std); H and W must be multiples of the patch size
    (other sizes than ``image_size`` interpolate the position table). ``frame_mask`` bool[B, F]
    (True = real frame) restricts the mean over frames; a row without any real frame pools to 0.
    """

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        p, w = cfg.patch_size, cfg.width
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        if cfg.stem_channels:
            self.stem = nnx.List(
                [
                    ConvLayer(c_in, c_out, rngs=rngs, **kw)
                    for c_in, c_out in zip(
                        (3, *cfg.stem_channels[:-1]), cfg.stem_channels, strict=True
                    )
                ]
            )
            self.patch_embed = layers.Dense(
                cfg.stem_channels[-1], w, axes=("channels", "embed"), rngs=rngs, **kw
            )
        else:
            self.patch_embed = layers.Dense(
                (p, p, 3), w, axes=("patch", "patch", "channels", "embed"), rngs=rngs, **kw
            )
        init = layers.default_kernel_init
        self.cls_token = layers.param(rngs, init, (w,), ("embed",), cfg.param_dtype)
        self.pos_embed = layers.param(
            rngs, init, (1 + cfg.grid**2, w), ("length", "embed"), cfg.param_dtype
        )
        self.blocks = layers.stack_layers(lambda r: EvaBlock(cfg, rngs=r), cfg.depth, rngs)
        self.norm = layers.LayerNorm(w, eps=cfg.eps, rngs=rngs, **kw)

    def embed_patches(self, images: Array) -> Array:
        """float[N, H, W, 3] -> dtype[N, 1 + h*w, W]: patches, CLS, position embeddings."""
        n, height, width, channels = images.shape
        p = self.cfg.patch_size
        if channels != 3 or height % p or width % p:
            raise ValueError(
                f"VisionTransformer: frames must be [..., H, W, 3] with H, W multiples of "
                f"{p}; got {images.shape}"
            )
        gh, gw = height // p, width // p
        if self.cfg.stem_channels:
            x = images.astype(self.cfg.dtype)
            for conv in self.stem:
                x = conv(x)  # [N, H/2^i, W/2^i, C_i]
        else:
            x = images.reshape(n, gh, p, gw, p, 3).transpose(0, 1, 3, 2, 4, 5)
        x = self.patch_embed(x).reshape(n, gh * gw, self.cfg.width)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (n, 1, self.cfg.width))
        x = jnp.concatenate([cls, x], axis=1)
        pos = resize_pos_embed(self.pos_embed[...], (gh, gw))
        return x + pos.astype(x.dtype)[None]

    def encode_images(self, images: Array, *, train: bool = False) -> Array:
        """float[N, H, W, 3] -> dtype[N, 1 + P, W] (after the final LayerNorm)."""
        x = layers.constrain(self.embed_patches(images), ("batch", "length", "embed"))
        rates = jnp.asarray(drop_path_rates(self.cfg.drop_path_rate, self.cfg.depth))

        def step(block, h, rate):
            return block(h, rate, train=train)

        policy = self.cfg.remat_policy
        if policy != "none":
            step = nnx.remat(
                step, policy=layers.REMAT_POLICIES[policy], prevent_cse=not self.cfg.scan_layers
            )

        def scan_body(h, block, rate):
            return step(block, h, rate)

        run = nnx.scan(
            scan_body,
            in_axes=(nnx.Carry, 0, 0),
            out_axes=nnx.Carry,
            unroll=1 if self.cfg.scan_layers else True,
        )
        x = run(x, self.blocks, rates)
        return self.norm(x)

    def __call__(
        self, frames: Array, *, train: bool = False, frame_mask: Array | None = None
    ) -> VisionOutput:
        if frames.ndim != 5:
            raise ValueError(
                f"VisionTransformer expects frames [B, F, H, W, 3], got {frames.shape}"
            )
        b, f = frames.shape[:2]
        tokens = self.encode_images(frames.reshape(b * f, *frames.shape[2:]), train=train)
        tokens = tokens.reshape(b, f, *tokens.shape[1:])
        if self.cfg.pool == "mean":
            cls = jnp.mean(tokens[:, :, 1:].astype(jnp.float32), axis=2)
        else:
            cls = tokens[:, :, 0].astype(jnp.float32)
        if frame_mask is None:
            pooled = jnp.mean(cls, axis=1)
        else:
            if frame_mask.shape != (b, f):
                raise ValueError(f"frame_mask must be bool[{b}, {f}], got {frame_mask.shape}")
            weight = frame_mask.astype(jnp.float32)[..., None]
            pooled = jnp.sum(cls * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0)
        return VisionOutput(cls=cls, tokens=tokens, pooled=pooled)
