"""Shared transformer building blocks (Flax NNX) for the BERT, ViT and audio towers.

Conventions used by every module here:

* ``dtype`` is the matmul/activation dtype (``jnp.bfloat16`` on accelerators, ``jnp.float32`` for
  parity tests); ``param_dtype`` is the storage dtype of parameters (always ``jnp.float32``).
  Softmax and LayerNorm statistics are computed in float32 whatever ``dtype`` is.
* Randomness (dropout, drop-path) comes from the ``'dropout'`` stream of the ``nnx.Rngs`` given at
  construction; the stream's state lives in the module state (``nnx.RngState``), so a functional
  caller (``nnx.split`` / ``nnx.merge``) carries it like any other state.
* Attention masks are boolean or integer, ``True``/non-zero = "may attend".

Logical axis names
------------------
Every parameter carries the metadata key ``logical_axes`` (a tuple of names, one per dimension;
read it with :func:`logical_axes_tree`). ``gram_jax.parallel`` maps these names to mesh axes
('data', 'fsdp', 'model'); a name without a rule is replicated.

==========  ================================================================
``embed``   model width (hidden size) of a tower
``heads``   attention heads (tensor-parallel axis)
``kv``      features per head
``mlp``     hidden units of a feed-forward block (tensor-parallel axis)
``vocab``   rows of a token embedding table
``layers``  leading axis of layer-stacked (scanned) parameters; never sharded
``length``  sequence/position axis of position tables
``batch``   activations only: the batch axis
``conv_in`` / ``conv_out`` / ``patch``  kernels of convolutional stems (replicated by default)
==========  ================================================================

Activations are annotated with :func:`constrain`, a no-op unless a caller has entered
:func:`logical_sharding` with a mesh and rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Re-exported so that towers import every building block from one module.
from gram_jax.models.axes import (  # noqa: F401
    LAYERS_AXIS,
    LOGICAL_AXES_KEY,
    constrain,
    logical_axes_tree,
    logical_sharding,
    param,
)
from gram_jax.models.stacking import REMAT_POLICIES, apply_layers, stack_layers  # noqa: F401

Array = jax.Array
DType = Any

# ----------------------------------------------------------------------------------------------
# Basic layers.
# ----------------------------------------------------------------------------------------------

default_kernel_init = nnx.initializers.truncated_normal(stddev=0.02)


class Dense(nnx.Module):
    """Affine map contracting the trailing ``in_shape`` dims of x into ``out_shape``.

    ``kernel``: param_dtype[*in_shape, *out_shape]; ``bias``: param_dtype[*out_shape].
    ``__call__(x[..., *in_shape]) -> dtype[..., *out_shape]``.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        *,
        axes: Sequence[str | None],
        use_bias: bool = True,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        kernel_init: Callable[..., Array] = default_kernel_init,
        rngs: nnx.Rngs,
    ):
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        self.dtype = dtype
        self.kernel = param(
            rngs, kernel_init, self.in_shape + self.out_shape, tuple(axes), param_dtype
        )
        if use_bias:
            bias_axes = tuple(axes)[len(self.in_shape) :]
            self.bias = param(rngs, nnx.initializers.zeros, self.out_shape, bias_axes, param_dtype)
        else:
            self.bias = nnx.data(None)

    def __call__(self, x: Array) -> Array:
        n_in = len(self.in_shape)
        if tuple(x.shape[x.ndim - n_in :]) != self.in_shape:
            raise ValueError(f"Dense expects trailing dims {self.in_shape}, got input {x.shape}")
        kernel = self.kernel[...].astype(self.dtype)
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel,
            ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())),
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis; statistics in float32, output cast to ``dtype``.

    ``scale``/``bias``: param_dtype[dim] with logical axes ('embed',).
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-6,
        use_bias: bool = True,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        axis_name: str = "embed",
        rngs: nnx.Rngs,
    ):
        self.eps = eps
        self.dtype = dtype
        self.scale = param(rngs, nnx.initializers.ones, (dim,), (axis_name,), param_dtype)
        if use_bias:
            self.bias = param(rngs, nnx.initializers.zeros, (dim,), (axis_name,), param_dtype)
        else:
            self.bias = nnx.data(None)

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class Embed(nnx.Module):
    """Lookup table ``embedding``: param_dtype[num, dim]; int ids[...] -> dtype[..., dim]."""

    def __init__(
        self,
        num: int,
        dim: int,
        *,
        axes: Sequence[str | None] = ("vocab", "embed"),
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num = num
        self.dtype = dtype
        self.embedding = param(rngs, default_kernel_init, (num, dim), tuple(axes), param_dtype)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


class Dropout(nnx.Module):
    """Elementwise dropout (inverted scaling); identity when ``train`` is False or rate is 0."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.rng = rngs["dropout"].fork()

    def __call__(self, x: Array, *, train: bool) -> Array:
        if not train or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(self.rng(), 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class DropPath(nnx.Module):
    """Stochastic depth: drops a whole residual branch per sample (axis 0), scaled by 1/keep."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.rng = rngs["dropout"].fork()

    def __call__(self, x: Array, *, train: bool) -> Array:
        if not train or self.rate == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.rng(), 1.0 - self.rate, shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU (BERT, EVA, BEATs)
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function called ``name`` (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nnx.Module):
    """fc1 -> activation -> dropout(inner) -> fc2 -> dropout: dtype[..., dim] -> dtype[..., dim].

    ``fc1.kernel``: [dim, hidden] ('embed', 'mlp'); ``fc2.kernel``: [hidden, dim] ('mlp', 'embed').
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        activation_name: str = "gelu",
        dropout_rate: float = 0.0,
        inner_dropout_rate: float = 0.0,
        use_bias: bool = True,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.act = activation(activation_name)
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = Dense(dim, hidden, axes=("embed", "mlp"), **kw)
        self.fc2 = Dense(hidden, dim, axes=("mlp", "embed"), **kw)
        self.inner_dropout = Dropout(inner_dropout_rate, rngs=rngs)
        self.dropout = Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        h = self.act(self.fc1(x))
        h = constrain(h, ("batch", "length", "mlp"))
        h = self.inner_dropout(h, train=train)
        return self.dropout(self.fc2(h), train=train)


# ----------------------------------------------------------------------------------------------
# Attention.
# ----------------------------------------------------------------------------------------------


def attention_mask(mask: Array | None) -> Array | None:
    """Normalise a mask to bool[B, 1 or H, Lq, Lk] (True = attend).

    Accepts bool/int ``[B, Lk]`` (key padding), ``[B, Lq, Lk]`` or ``[B, H|1, Lq, Lk]``.
    """
    if mask is None:
        return None
    mask = mask.astype(jnp.bool_) if mask.dtype != jnp.bool_ else mask
    if mask.ndim == 2:
        return mask[:, None, None, :]
    if mask.ndim == 3:
        return mask[:, None, :, :]
    if mask.ndim == 4:
        return mask
    raise ValueError(
        f"attention mask must be [B, Lk], [B, Lq, Lk] or [B, H, Lq, Lk]; got {mask.shape}"
    )


class Attention(nnx.Module):
    """Multi-head (self or cross) attention with optional additive bias.

    Params: ``query/key/value.kernel`` [in, H, Dh] ('embed', 'heads', 'kv') with optional bias
    [H, Dh]; ``out.kernel`` [H, Dh, dim] ('heads', 'kv', 'embed') and bias [dim].
    ``qkv_bias`` is a bool or a (q, k, v) triple (EVA01 has no key bias).

    ``__call__(x[B, Lq, dim], context[B, Lk, kv_dim] | None, *, mask, bias, train)
    -> dtype[B, Lq, dim]``; ``mask`` is bool/int (see :func:`attention_mask`), ``bias`` is a float
    array broadcastable to [B, H, Lq, Lk] added to the logits (e.g. relative position bias).
    Logits and softmax are float32; the matmuls run in ``dtype``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool | tuple[bool, bool, bool] = True,
        out_bias: bool = True,
        scale: float | None = None,
        attn_dropout_rate: float = 0.0,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        kv_dim = kv_dim if kv_dim is not None else dim
        q_bias, k_bias, v_bias = (qkv_bias,) * 3 if isinstance(qkv_bias, bool) else qkv_bias
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        proj_axes = ("embed", "heads", "kv")
        self.query = Dense(dim, (num_heads, head_dim), axes=proj_axes, use_bias=q_bias, **kw)
        self.key = Dense(kv_dim, (num_heads, head_dim), axes=proj_axes, use_bias=k_bias, **kw)
        self.value = Dense(kv_dim, (num_heads, head_dim), axes=proj_axes, use_bias=v_bias, **kw)
        self.out = Dense(
            (num_heads, head_dim), dim, axes=("heads", "kv", "embed"), use_bias=out_bias, **kw
        )
        self.attn_dropout = Dropout(attn_dropout_rate, rngs=rngs)

    def __call__(
        self,
        x: Array,
        context: Array | None = None,
        *,
        mask: Array | None = None,
        bias: Array | None = None,
        train: bool = False,
    ) -> Array:
        context = x if context is None else context
        q = constrain(self.query(x), ("batch", "length", "heads", "kv"))
        k = constrain(self.key(context), ("batch", "length", "heads", "kv"))
        v = constrain(self.value(context), ("batch", "length", "heads", "kv"))
        q = q * jnp.asarray(self.scale, q.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        mask4 = attention_mask(mask)
        if mask4 is not None:
            logits = jnp.where(mask4, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = self.attn_dropout(probs, train=train).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(self.dtype))
        return self.out(y)


# ----------------------------------------------------------------------------------------------
# A pre-LN transformer block (ViT/EVA style) and layer stacking with scan + remat.
# ----------------------------------------------------------------------------------------------


class PreNormBlock(nnx.Module):
    """x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x))): dtype[B, L, dim] -> dtype[B, L, dim]."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        eps: float = 1e-6,
        qkv_bias: bool | tuple[bool, bool, bool] = True,
        activation_name: str = "gelu",
        drop_path_rate: float = 0.0,
        dropout_rate: float = 0.0,
        attn_dropout_rate: float = 0.0,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = LayerNorm(dim, eps=eps, **kw)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, attn_dropout_rate=attn_dropout_rate, **kw
        )
        self.attn_dropout = Dropout(dropout_rate, rngs=rngs)
        self.norm2 = LayerNorm(dim, eps=eps, **kw)
        self.mlp = MLP(
            dim, mlp_hidden, activation_name=activation_name, dropout_rate=dropout_rate, **kw
        )
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)

    def __call__(
        self, x: Array, *, mask: Array | None = None, bias: Array | None = None, train: bool = False
    ) -> Array:
        h = self.attn(self.norm1(x), mask=mask, bias=bias, train=train)
        x = x + self.drop_path(self.attn_dropout(h, train=train), train=train)
        x = x + self.drop_path(self.mlp(self.norm2(x), train=train), train=train)
        return constrain(x, ("batch", "length", "embed"))
