"""BERT text encoder (Hugging Face ``BertModel`` compatible) with optional cross-attention.

Architecture (post-LayerNorm BERT, as ``transformers.BertModel``): word + absolute position +
token-type embeddings -> LayerNorm (eps 1e-12) -> dropout -> N layers of
``LN(x + Attn(x))`` [-> ``LN(x + CrossAttn(x, context))``] -> ``LN(x + MLP(x))`` with exact-erf
GELU. Self-attention is bidirectional (GRAM comments out the causal branch of its decoder BERT,
the released text encoder). No pooler: GRAM reads the CLS token of the last hidden state.

One set of weights serves three roles (section 3.4): the text encoder, the subtitle encoder (no
context: the cross-attention blocks are skipped) and the fusion encoder of the matching loss
(``context`` = condition tokens [B, N, encoder_width]).

Parameters (``param_dtype``, default float32) with logical axes:
  ``embeddings.word.embedding`` [V, H] ('vocab', 'embed'); ``embeddings.position.embedding``
  [P, H] ('length', 'embed'); ``embeddings.token_type.embedding`` [T, H]; ``embeddings.norm``;
  ``layers.*`` stacked on a leading 'layers' axis: ``attn`` / ``cross_attn``
  (``layers.Attention``), ``attn_norm`` / ``cross_norm`` / ``mlp_norm`` (LayerNorm),
  ``mlp.fc1`` / ``mlp.fc2``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gram_jax.models import layers

Array = jax.Array

# 'tiny' is for tests; 'minilm' is all-MiniLM-L6-v2; 'base' is bert-base-uncased (GRAM's text
# encoder). All share the bert-base-uncased WordPiece vocabulary (30,522 entries).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=64, num_layers=2, heads=4, mlp_dim=256),
    "minilm": dict(hidden=384, num_layers=6, heads=12, mlp_dim=1536),
    "base": dict(hidden=768, num_layers=12, heads=12, mlp_dim=3072),
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of the BERT encoder (see ``bert_config`` for the named sizes)."""

    hidden: int = 768
    num_layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12
    activation: str = "gelu"  # exact erf GELU, as HF's "gelu"
    dropout_rate: float = 0.1  # hidden dropout (embeddings, attention output, MLP output)
    attn_dropout_rate: float = 0.1  # on the attention probabilities
    cross_attention: bool = False  # a cross-attention block in every layer (fusion encoder)
    encoder_width: int | None = None  # width of the context tokens; None = hidden
    dtype: Any = jnp.float32  # matmul/activation dtype (bf16 on accelerators)
    param_dtype: Any = jnp.float32
    remat_policy: str = "none"  # a key of layers.REMAT_POLICIES
    scan_layers: bool = True  # False unrolls the layer loop (same parameters)

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(
                f"BertConfig: hidden {self.hidden} not divisible by heads {self.heads}"
            )
        if self.remat_policy not in layers.REMAT_POLICIES:
            raise ValueError(
                f"BertConfig.remat_policy {self.remat_policy!r}: expected one of "
                f"{sorted(layers.REMAT_POLICIES)}"
            )
        layers.activation(self.activation)  # raises on an unknown name

    @property
    def context_width(self) -> int:
        return self.hidden if self.encoder_width is None else self.encoder_width


def bert_config(size: str = "base", **overrides: Any) -> BertConfig:
    """The ``BertConfig`` of a named size ('tiny', 'minilm', 'base') with ``overrides``."""
    if size not in SIZES:
        raise ValueError(f"unknown BERT size {size!r}; expected one of {sorted(SIZES)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(BertConfig)}
    if unknown:
        raise ValueError(f"bert_config: unknown keys {sorted(unknown)}")
    return BertConfig(**{**SIZES[size], **overrides})


class BertEmbeddings(nnx.Module):
    """ids int[B, L] (+ token types int[B, L]) -> dtype[B, L, H] (after LayerNorm and dropout)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        kw = dict(dtype=jnp.float32, param_dtype=cfg.param_dtype, rngs=rngs)
        self.word = layers.Embed(cfg.vocab_size, cfg.hidden, axes=("vocab", "embed"), **kw)
        self.position = layers.Embed(cfg.max_positions, cfg.hidden, axes=("length", "embed"), **kw)
        self.token_type = layers.Embed(cfg.type_vocab_size, cfg.hidden, axes=(None, "embed"), **kw)
        self.norm = layers.LayerNorm(
            cfg.hidden, eps=cfg.eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs
        )
        self.dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)

    def __call__(self, ids: Array, token_types: Array | None, *, train: bool) -> Array:
        length = ids.shape[1]
        if length > self.cfg.max_positions:
            raise ValueError(
                f"BERT: sequence length {length} exceeds max_positions {self.cfg.max_positions}"
            )
        if token_types is None:
            token_types = jnp.zeros_like(ids)
        # Sum in float32 (as HF does) before the LayerNorm casts to the compute dtype.
        x = self.word(ids) + self.token_type(token_types)
        x = x + self.position.embedding[...][:length].astype(jnp.float32)[None]
        return self.dropout(self.norm(x), train=train)


class BertLayer(nnx.Module):
    """One post-LN BERT layer: dtype[B, L, H] -> dtype[B, L, H]."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        attn_kw = dict(attn_dropout_rate=cfg.attn_dropout_rate, qkv_bias=True, **kw)
        self.attn = layers.Attention(cfg.hidden, cfg.heads, **attn_kw)
        self.attn_dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)
        self.attn_norm = layers.LayerNorm(cfg.hidden, eps=cfg.eps, **kw)
        if cfg.cross_attention:
            self.cross_attn = layers.Attention(
                cfg.hidden, cfg.heads, kv_dim=cfg.context_width, **attn_kw
            )
            self.cross_dropout = layers.Dropout(cfg.dropout_rate, rngs=rngs)
            self.cross_norm = layers.LayerNorm(cfg.hidden, eps=cfg.eps, **kw)
        self.has_cross = cfg.cross_attention
        self.mlp = layers.MLP(
            cfg.hidden,
            cfg.mlp_dim,
            activation_name=cfg.activation,
            dropout_rate=cfg.dropout_rate,
            **kw,
        )
        self.mlp_norm = layers.LayerNorm(cfg.hidden, eps=cfg.eps, **kw)

    def __call__(
        self,
        x: Array,
        mask: Array | None,
        context: Array | None,
        context_mask: Array | None,
        *,
        train: bool,
    ) -> Array:
        h = self.attn(x, mask=mask, train=train)
        x = self.attn_norm(x + self.attn_dropout(h, train=train))
        if context is not None:
            h = self.cross_attn(x, context, mask=context_mask, train=train)
            x = self.cross_norm(x + self.cross_dropout(h, train=train))
        x = self.mlp_norm(x + self.mlp(x, train=train))
        return layers.constrain(x, ("batch", "length", "embed"))


class BertEncoder(nnx.Module):
    """Hugging Face-compatible BERT with optional cross-attention in every layer.

    ``__call__(ids int[B, L], mask int|bool[B, L] or [B, L, L] | None, *, token_types=None,
    context=None, context_mask=None, train=False) -> dtype[B, L, H]`` (the last hidden state).
    ``context``: float[B, N, encoder_width] condition tokens (requires ``cross_attention``);
    ``context_mask``: int|bool[B, N] (None = attend to every context token).
    """

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg, rngs=rngs)
        self.layers = layers.stack_layers(lambda r: BertLayer(cfg, rngs=r), cfg.num_layers, rngs)

    def __call__(
        self,
        ids: Array,
        mask: Array | None = None,
        *,
        token_types: Array | None = None,
        context: Array | None = None,
        context_mask: Array | None = None,
        train: bool = False,
    ) -> Array:
        if ids.ndim != 2:
            raise ValueError(f"BERT expects ids int[B, L], got shape {ids.shape}")
        if mask is not None and mask.shape not in (ids.shape, (*ids.shape, ids.shape[1])):
            raise ValueError(
                f"BERT: mask must be [B, L] (padding) or [B, L, L] for ids {ids.shape}; "
                f"got {mask.shape}"
            )
        if context is not None:
            if not self.cfg.cross_attention:
                raise ValueError("BERT: context given but the config has cross_attention=False")
            if context.ndim != 3 or context.shape[-1] != self.cfg.context_width:
                raise ValueError(
                    f"BERT: context must be [B, N, {self.cfg.context_width}], got {context.shape}"
                )
            context = context.astype(self.cfg.dtype)
        x = self.embeddings(ids, token_types, train=train)
        x = layers.constrain(x, ("batch", "length", "embed"))

        def step(layer, h):
            return layer(h, mask, context, context_mask, train=train)

        return layers.apply_layers(
            self.layers,
            x,
            step,
            scan=self.cfg.scan_layers,
            remat_policy=self.cfg.remat_policy,
        )


def mean_pool(hidden: Array, mask: Array) -> Array:
    """Mean of the real tokens (sentence-transformers' pooling; the text tower's ``text_pool``
    'mean'): hidden[B, L, H], mask int|bool[B, L] -> float32[B, H] (0 for a row with no token)."""
    weight = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * weight, axis=1)
    return total / jnp.maximum(jnp.sum(weight, axis=1), 1e-9)
