"""Audio tower: a transformer compatible with BEATs (BEATs_iter3_plus_AS2M), GRAM's audio encoder.

Pipeline per clip (BEATs, Chen et al. 2023; read from microsoft/unilm beats/, re-written):

  fbank [T=1024, M] --conv 16x16 stride 16, 1 -> 512, no bias--> [T/16 * M/16, 512] (time-major)
  --LayerNorm(512)--> --Linear 512 -> 768--> x
  x + GELU(grouped Conv1d(x)) (kernel 128, 16 groups, weight norm over the kernel axis, even kernel:
  the last output dropped) --LayerNorm--> dropout --> 12 post-LN layers --> tokens [N, 768]

Each layer (``layer_norm_first=False`` with deep norm, alpha = (2 * depth) ** 0.25):
  x = LN(alpha * x + Dropout(Attn(x)));  x = LN(alpha * x + Dropout(fc2(Dropout(GELU(fc1(x))))))
Attention adds a bucketed relative position bias (T5-style, bidirectional: ``num_buckets`` buckets,
log-spaced up to ``max_distance``). Its table lives in the first layer only (``rel_pos_bias``
here); every layer scales it per query and head by a gate computed from its own unscaled query
projection: g = sigmoid(sum over 4 of grep_linear(q)) split in (a, b); scale = a * (b * grep_a - 1)
+ 2. The public code's float16 overflow guard (q / 32, max-subtraction, x 32) is a mathematical
no-op and is not reproduced; tests/test_convert_beats.py shows the difference is float32 round-off
(<= 1e-4 against a PyTorch restatement that keeps it, at the real base shape).

Input batches are ``[B, C, T, M]`` (C clips); clips are folded into the batch, and the tower returns
the mean over tokens and over (present) clips ``[B, W]`` and the tokens ``[B, C, N, W]`` (the
fusion condition). LayerNorm eps is 1e-5 throughout (PyTorch's default, as in BEATs).

Parameters (float32 by default; logical axes in brackets): ``patch_embedding.kernel`` [16, 16, 512]
('patch', 'patch', 'conv_out'); ``layer_norm``; ``post_extract_proj`` [512, W]; ``pos_conv``
(``weight_v`` [K, W/G, W], ``weight_g`` [K], ``bias``); ``encoder_layer_norm``; ``rel_pos_bias``
[buckets, H] ('pos', 'heads'); ``layers.*`` stacked on a leading 'layers' axis (``self_attn``
query/key/value/out/grep_linear/grep_a, ``self_attn_layer_norm``, ``mlp.fc1/fc2``,
``final_layer_norm``). ``gram_jax.convert.beats`` maps the public checkpoint names onto these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gram_jax.models import layers

Array = jax.Array

SIZES: dict[str, dict[str, Any]] = {
    # BEATs_iter3_plus_AS2M (the checkpoint's cfg).
    "base": dict(
        patch_dim=512, width=768, depth=12, heads=12, mlp_dim=3072, conv_pos=128,
        conv_pos_groups=16, num_buckets=320, max_distance=800,
    ),
    # For tests: same structure, small sizes.
    "tiny": dict(
        patch_dim=32, width=64, depth=2, heads=4, mlp_dim=128, conv_pos=16, conv_pos_groups=4,
        num_buckets=32, max_distance=64,
    ),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Hyper-parameters of the BEATs-compatible audio tower (see ``audio_config``)."""

    patch_size: int = 16
    patch_dim: int = 512
    conv_bias: bool = False
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    deep_norm: bool = True
    eps: float = 1e-5
    dropout_rate: float = 0.1  # BEATs `dropout` (encoder input and residual branches)
    attn_dropout_rate: float = 0.1  # BEATs `attention_dropout`
    activation_dropout_rate: float = 0.0  # BEATs `activation_dropout`
    # BEATs `encoder_layerdrop`: in training each layer is skipped (identity) with this
    # probability, one draw per layer and batch; evaluation runs every layer.
    layerdrop: float = 0.0
    # BEATs `layer_wise_gradient_decay_ratio`: the gradient entering each layer from the one above
    # is multiplied by this (forward unchanged), so lower layers learn more slowly.
    layer_grad_scale: float = 1.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat_policy: str = "none"
    scan_layers: bool = True
    # How the grouped positional conv is computed: 'conv' (one grouped convolution), 'taps' (a scan
    # over kernel taps of block-diagonal matmuls; XLA:CPU's grouped-conv weight gradient is ~15x
    # slower than this), or 'auto' ('taps' on CPU, 'conv' elsewhere). Same values either way.
    conv_pos_impl: str = "auto"

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"AudioConfig: width {self.width} not divisible by heads {self.heads}")
        if self.width % self.conv_pos_groups:
            raise ValueError(
                f"AudioConfig: width {self.width} not divisible by conv_pos_groups "
                f"{self.conv_pos_groups}"
            )
        if self.conv_pos_impl not in ("auto", "conv", "taps"):
            raise ValueError(
                f"AudioConfig.conv_pos_impl {self.conv_pos_impl!r}: expected auto, conv or taps"
            )
        if not 0.0 <= self.layerdrop < 1.0:
            raise ValueError(f"AudioConfig.layerdrop {self.layerdrop}: expected a value in [0, 1)")
        if self.remat_policy not in layers.REMAT_POLICIES:
            raise ValueError(
                f"AudioConfig.remat_policy {self.remat_policy!r}: expected one of "
                f"{sorted(layers.REMAT_POLICIES)}"
            )

    @property
    def deep_norm_alpha(self) -> float:
        return (2.0 * self.depth) ** 0.25 if self.deep_norm else 1.0


def audio_config(size: str = "base", **overrides: Any) -> AudioConfig:
    """The ``AudioConfig`` of a named size ('tiny', 'base') with ``overrides``."""
    if size not in SIZES:
        raise ValueError(f"unknown audio tower size {size!r}; expected one of {sorted(SIZES)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(AudioConfig)}
    if unknown:
        raise ValueError(f"audio_config: unknown keys {sorted(unknown)}")
    return AudioConfig(**{**SIZES[size], **overrides})


class AudioOutput(NamedTuple):
    """``pooled``: float32[B, W]; ``tokens``: dtype[B, C, N, W]."""

    pooled: Array
    tokens: Array


@jax.custom_vjp
def scale_gradient(x: Array, scale: float) -> Array:
    """Identity in the forward pass; multiplies the incoming gradient by ``scale``."""
    return x


def _scale_gradient_fwd(x, scale):
    return x, scale


def _scale_gradient_bwd(scale, grad):
    return (grad * jnp.asarray(scale, grad.dtype), None)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """int32[length, length] bucket of (key - query) offsets, bidirectional T5/BEATs rule.

    Half the buckets hold positive offsets. In each half, offsets below a quarter of the buckets
    get their own bucket; larger ones share log-spaced buckets up to ``max_distance`` (clipped).
    """
    pos = np.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    dist = np.abs(rel)
    # log(0) is never used (masked by `dist < exact`); clamp to keep the array finite.
    far = exact + (
        np.log(np.maximum(dist, 1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).astype(np.int64)
    far = np.minimum(far, half - 1)
    buckets = (rel > 0) * half + np.where(dist < exact, dist, far)
    return buckets.astype(np.int32)


class ConvPositionalEmbedding(nnx.Module):
    """GELU(grouped Conv1d with weight norm)(x): dtype[N, L, W] -> dtype[N, L, W].

    ``weight_v`` [K, W / groups, W] ('conv_in' = kernel taps, 'kv', 'embed'), ``weight_g`` [K]
    (the weight-norm magnitude per tap: BEATs normalises over all dims but the kernel axis),
    ``bias`` [W]. Padding K // 2 on both sides; for even K the last output is dropped.
    """

    def __init__(self, cfg: AudioConfig, *, rngs: nnx.Rngs):
        k, w, g = cfg.conv_pos, cfg.width, cfg.conv_pos_groups
        self.cfg = cfg
        std = math.sqrt(4.0 / (k * w))  # BEATs' init of the conv before weight norm
        self.weight_v = layers.param(
            rngs, nnx.initializers.normal(std), (k, w // g, w), ("conv_in", "kv", "embed"),
            cfg.param_dtype,
        )  # fmt: skip
        norm = jnp.sqrt(jnp.sum(jnp.square(self.weight_v[...]), axis=(1, 2)))
        self.weight_g = nnx.Param(norm.astype(cfg.param_dtype), logical_axes=("conv_in",))
        self.bias = layers.param(rngs, nnx.initializers.zeros, (w,), ("embed",), cfg.param_dtype)

    def __call__(self, x: Array) -> Array:
        cfg = self.cfg
        v = self.weight_v[...].astype(jnp.float32)
        g = self.weight_g[...].astype(jnp.float32)
        kernel = v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))))[:, None, None]
        impl = cfg.conv_pos_impl
        if impl == "auto":
            impl = "taps" if jax.default_backend() == "cpu" else "conv"
        x, kernel = x.astype(cfg.dtype), kernel.astype(cfg.dtype)
        y = _grouped_conv_taps(x, kernel, cfg) if impl == "taps" else _grouped_conv(x, kernel, cfg)
        if cfg.conv_pos % 2 == 0:
            y = y[:, :-1]
        y = y + self.bias[...].astype(y.dtype)
        return layers.activation("gelu")(y)


def _grouped_conv(x: Array, kernel: Array, cfg: AudioConfig) -> Array:
    """[N, L, W] * [K, W/G, W] -> [N, L + 2 * (K // 2) - K + 1, W], one grouped convolution."""
    pad = cfg.conv_pos // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=cfg.conv_pos_groups,
    )


def _grouped_conv_taps(x: Array, kernel: Array, cfg: AudioConfig) -> Array:
    """The same grouped convolution as a scan over the K taps of block-diagonal matmuls."""
    n, length, w = x.shape
    k, g = cfg.conv_pos, cfg.conv_pos_groups
    pad = k // 2
    out_len = length + 2 * pad - k + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0))).reshape(n, length + 2 * pad, g, w // g)
    taps = kernel.reshape(k, w // g, g, w // g)  # [tap, in-channel of group, group, out-channel]

    def add_tap(acc, tap):
        window = jax.lax.dynamic_slice_in_dim(xp, tap, out_len, axis=1)
        term = jnp.einsum("nlgc,cgd->nlgd", window, taps[tap], preferred_element_type=jnp.float32)
        return acc + term, None

    acc = jnp.zeros((n, out_len, g, w // g), jnp.float32)
    acc, _ = jax.lax.scan(add_tap, acc, jnp.arange(k))
    return acc.reshape(n, out_len, w).astype(x.dtype)


class GatedRelPosAttention(nnx.Module):
    """Self-attention with a gated relative position bias: dtype[N, L, W] -> dtype[N, L, W].

    ``query/key/value.kernel`` [W, H, Dh], biases [H, Dh]; ``out.kernel`` [H, Dh, W];
    ``grep_linear.kernel`` [Dh, 8] ('kv', None); ``grep_a`` [H] ('heads',).
    """

    def __init__(self, cfg: AudioConfig, *, rngs: nnx.Rngs):
        h, dh = cfg.heads, cfg.width // cfg.heads
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        axes = ("embed", "heads", "kv")
        self.query = layers.Dense(cfg.width, (h, dh), axes=axes, **kw)
        self.key = layers.Dense(cfg.width, (h, dh), axes=axes, **kw)
        self.value = layers.Dense(cfg.width, (h, dh), axes=axes, **kw)
        self.out = layers.Dense((h, dh), cfg.width, axes=("heads", "kv", "embed"), **kw)
        self.grep_linear = layers.Dense(dh, 8, axes=("kv", None), **kw)
        self.grep_a = layers.param(rngs, nnx.initializers.ones, (h,), ("heads",), cfg.param_dtype)
        self.attn_dropout = layers.Dropout(cfg.attn_dropout_rate, rngs=rngs)
        self.scale = dh**-0.5
        self.dtype = cfg.dtype

    def __call__(self, x: Array, position_bias: Array, *, train: bool) -> Array:
        """``position_bias``: float32[H, L, L] (ungated, shared by all layers)."""
        q = layers.constrain(self.query(x), ("batch", "length", "heads", "kv"))
        k = layers.constrain(self.key(x), ("batch", "length", "heads", "kv"))
        v = layers.constrain(self.value(x), ("batch", "length", "heads", "kv"))
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", q * jnp.asarray(self.scale, q.dtype), k,
            preferred_element_type=jnp.float32,
        )  # fmt: skip
        # The gate reads the unscaled query projection (bias included), per head and position.
        gates = jax.nn.sigmoid(
            self.grep_linear(q).astype(jnp.float32).reshape(*q.shape[:3], 2, 4).sum(-1)
        )  # [B, L, H, 2]
        gate_a, gate_b = gates[..., 0], gates[..., 1]
        grep_a = self.grep_a[...].astype(jnp.float32)
        scale = gate_a * (gate_b * grep_a - 1.0) + 2.0  # [B, L, H]
        logits = logits + scale.transpose(0, 2, 1)[..., None] * position_bias[None]
        probs = jax.nn.softmax(logits, axis=-1)
        probs = self.attn_dropout(probs, train=train).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(self.dtype))
        return self.out(y)


class BeatsLayer(nnx.Module):
    """Post-LN (deep-norm) encoder layer: dtype[N, L, W] -> dtype[N, L, W]."""

    def __init__(self, cfg: AudioConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.self_attn = GatedRelPosAttention(cfg, rngs=rngs)
        self.attn_dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)
        self.self_attn_layer_norm = layers.LayerNorm(cfg.width, eps=cfg.eps, **kw)
        self.mlp = layers.MLP(
            cfg.width,
            cfg.mlp_dim,
            activation_name="gelu",
            dropout_rate=cfg.dropout_rate,
            inner_dropout_rate=cfg.activation_dropout_rate,
            **kw,
        )
        self.final_layer_norm = layers.LayerNorm(cfg.width, eps=cfg.eps, **kw)
        self.alpha = cfg.deep_norm_alpha
        self.layerdrop = float(cfg.layerdrop)
        if self.layerdrop:
            self.layerdrop_rng = rngs["dropout"].fork()

    def __call__(self, x: Array, position_bias: Array, *, train: bool = False) -> Array:
        alpha = jnp.asarray(self.alpha, x.dtype)
        h = self.attn_dropout(self.self_attn(x, position_bias, train=train), train=train)
        y = self.self_attn_layer_norm(x * alpha + h)
        y = self.final_layer_norm(y * alpha + self.mlp(y, train=train))
        if train and self.layerdrop:
            # BEATs runs the layer iff a uniform draw exceeds the rate (no rescaling).
            keep = jax.random.uniform(self.layerdrop_rng()) > self.layerdrop
            y = jnp.where(keep, y, x)
        return layers.constrain(y, ("batch", "length", "embed"))


class AudioTransformer(nnx.Module):
    """BEATs-compatible audio tower.

    ``__call__(fbank float[B, C, T, M], *, train=False, clip_mask=None) -> AudioOutput``.
    T and M must be multiples of the patch size (16). ``clip_mask`` bool[B, C] (True = real clip)
    restricts the mean over clips; a row with no real clip pools to 0.
    """

    def __init__(self, cfg: AudioConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        p = cfg.patch_size
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        self.patch_embedding = layers.Dense(
            (p, p), cfg.patch_dim, axes=("patch", "patch", "conv_out"), use_bias=cfg.conv_bias,
            rngs=rngs, **kw,
        )  # fmt: skip
        self.layer_norm = layers.LayerNorm(
            cfg.patch_dim, eps=cfg.eps, axis_name="conv_out", rngs=rngs, **kw
        )
        self.post_extract_proj = layers.Dense(
            cfg.patch_dim, cfg.width, axes=("conv_out", "embed"), rngs=rngs, **kw
        )
        self.pos_conv = ConvPositionalEmbedding(cfg, rngs=rngs)
        self.encoder_layer_norm = layers.LayerNorm(cfg.width, eps=cfg.eps, rngs=rngs, **kw)
        self.input_dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)
        self.rel_pos_bias = layers.param(
            rngs, nnx.initializers.xavier_normal(), (cfg.num_buckets, cfg.heads),
            ("pos", "heads"), cfg.param_dtype,
        )  # fmt: skip
        self.layers = layers.stack_layers(lambda r: BeatsLayer(cfg, rngs=r), cfg.depth, rngs)

    def embed_patches(self, fbank: Array) -> Array:
        """float[N, T, M] -> dtype[N, T/16 * M/16, W] (patch conv, LN, projection)."""
        n, t, m = fbank.shape
        p = self.cfg.patch_size
        if t % p or m % p:
            raise ValueError(
                f"AudioTransformer: T={t} and M={m} must be multiples of the patch size {p}"
            )
        x = fbank.reshape(n, t // p, p, m // p, p).transpose(0, 1, 3, 2, 4)
        x = self.patch_embedding(x).reshape(n, (t // p) * (m // p), self.cfg.patch_dim)
        return self.post_extract_proj(self.layer_norm(x))

    def position_bias(self, length: int) -> Array:
        """float32[H, L, L] relative position bias (before the per-layer gates)."""
        cfg = self.cfg
        buckets = relative_position_buckets(length, cfg.num_buckets, cfg.max_distance)
        table = self.rel_pos_bias[...].astype(jnp.float32)
        return jnp.take(table, jnp.asarray(buckets), axis=0).transpose(2, 0, 1)

    def encode_clips(self, fbank: Array, *, train: bool = False) -> Array:
        """float[N, T, M] -> dtype[N, L, W] tokens."""
        x = self.embed_patches(fbank)
        x = self.encoder_layer_norm(x + self.pos_conv(x))
        x = layers.constrain(self.input_dropout(x, train=train), ("batch", "length", "embed"))
        bias = self.position_bias(x.shape[1])
        grad_scale = self.cfg.layer_grad_scale

        def step(layer, h):
            if grad_scale != 1.0:
                h = scale_gradient(h, grad_scale)
            return layer(h, bias, train=train)

        return layers.apply_layers(
            self.layers,
            x,
            step,
            scan=self.cfg.scan_layers,
            remat_policy=self.cfg.remat_policy,
        )

    def __call__(
        self, fbank: Array, *, train: bool = False, clip_mask: Array | None = None
    ) -> AudioOutput:
        if fbank.ndim != 4:
            raise ValueError(f"AudioTransformer expects fbank [B, C, T, M], got {fbank.shape}")
        b, c = fbank.shape[:2]
        tokens = self.encode_clips(fbank.reshape(b * c, *fbank.shape[2:]), train=train)
        tokens = tokens.reshape(b, c, *tokens.shape[1:])
        per_clip = jnp.mean(tokens.astype(jnp.float32), axis=2)  # [B, C, W]
        if clip_mask is None:
            pooled = jnp.mean(per_clip, axis=1)
        else:
            if clip_mask.shape != (b, c):
                raise ValueError(f"clip_mask must be bool[{b}, {c}], got {clip_mask.shape}")
            weight = clip_mask.astype(jnp.float32)[..., None]
            pooled = jnp.sum(per_clip * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0)
        return AudioOutput(pooled=pooled, tokens=tokens)
