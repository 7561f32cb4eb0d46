"""Hugging Face BERT state dict -> ``gram_jax.models.bert.BertEncoder`` params.

Accepted key layouts (detected, or given as ``prefix``):

- ``transformers.BertModel`` (``embeddings.*``, ``encoder.layer.N.*``, ``pooler.*``), e.g.
  all-MiniLM-L6-v2's ``model.safetensors``;
- ``BertForMaskedLM`` / ``BertForPreTraining`` (the same under ``bert.``; ``cls.*``: MLM head);
- any other prefix, e.g. ``multimodal_encoder.bert.`` inside a GRAM/VAST release.

Per layer: ``attention.self.{query,key,value}`` -> ``attn.{query,key,value}``,
``attention.output.dense`` -> ``attn.out``, ``attention.output.LayerNorm`` -> ``attn_norm``,
``crossattention.*`` -> ``cross_attn`` / ``cross_norm`` (GRAM's fusion layers),
``intermediate.dense`` -> ``mlp.fc1``, ``output.dense`` -> ``mlp.fc2``, ``output.LayerNorm`` ->
``mlp_norm``. PyTorch ``Linear`` weights are [out, in]; ours are [in, ...out] with the heads split
(``query.kernel`` [H, heads, Dh] = W.T reshaped). Old TF-era names ``gamma``/``beta`` are accepted
for LayerNorm weight/bias. Keys with no counterpart (``pooler.*``, ``cls.*``, the
``position_ids`` buffer) are reported as unused, by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from gram_jax.convert.torch_state import (
    ConversionReport,
    LayerStacks,
    ParamTarget,
    abstract_params,
    finish,
    keys_under,
    layer_of,
    to_numpy,
    write_params,
)
from gram_jax.models.bert import BertConfig, BertEncoder

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")

# Source suffix (after ``encoder.layer.N.``) -> (our path inside ``layers``, transform kind).
_LAYER_KEYS: dict[str, tuple[tuple[str, ...], str]] = {}
for _src, _dst in (("attention", "attn"), ("crossattention", "cross_attn")):
    for _proj in ("query", "key", "value"):
        _LAYER_KEYS[f"{_src}.self.{_proj}.weight"] = ((_dst, _proj, "kernel"), "in_heads")
        _LAYER_KEYS[f"{_src}.self.{_proj}.bias"] = ((_dst, _proj, "bias"), "heads")
    _LAYER_KEYS[f"{_src}.output.dense.weight"] = ((_dst, "out", "kernel"), "heads_out")
    _LAYER_KEYS[f"{_src}.output.dense.bias"] = ((_dst, "out", "bias"), "copy")
_NORMS = {
    "attention.output.LayerNorm": "attn_norm",
    "crossattention.output.LayerNorm": "cross_norm",
    "output.LayerNorm": "mlp_norm",
}
for _src, _dst in _NORMS.items():
    for _w, _ours in (("weight", "scale"), ("gamma", "scale"), ("bias", "bias"), ("beta", "bias")):
        _LAYER_KEYS[f"{_src}.{_w}"] = ((_dst, _ours), "copy")
_LAYER_KEYS.update(
    {
        "intermediate.dense.weight": (("mlp", "fc1", "kernel"), "linear"),
        "intermediate.dense.bias": (("mlp", "fc1", "bias"), "copy"),
        "output.dense.weight": (("mlp", "fc2", "kernel"), "linear"),
        "output.dense.bias": (("mlp", "fc2", "bias"), "copy"),
    }
)

_EMBED_KEYS: dict[str, tuple[str, ...]] = {
    "embeddings.word_embeddings.weight": ("word", "embedding"),
    "embeddings.position_embeddings.weight": ("position", "embedding"),
    "embeddings.token_type_embeddings.weight": ("token_type", "embedding"),
    "embeddings.LayerNorm.weight": ("norm", "scale"),
    "embeddings.LayerNorm.gamma": ("norm", "scale"),
    "embeddings.LayerNorm.bias": ("norm", "bias"),
    "embeddings.LayerNorm.beta": ("norm", "bias"),
}


def detect_prefix(state_dict: Mapping[str, Any]) -> str:
    """The prefix before ``embeddings.word_embeddings.weight`` (e.g. '', 'bert.')."""
    suffix = "embeddings.word_embeddings.weight"
    found = sorted(k[: -len(suffix)] for k in state_dict if k.endswith(suffix))
    if not found:
        raise KeyError(f"no BERT found: no key ends with {suffix!r} (pass prefix= explicitly)")
    if len(found) > 1:
        raise KeyError(f"several BERT models in the state dict (prefixes {found}); pass prefix=")
    return found[0]


def _transform(kind: str, value: np.ndarray, heads: int, key: str) -> np.ndarray:
    if kind == "copy":
        return value
    if value.ndim != (1 if kind == "heads" else 2):
        raise ValueError(f"state dict key {key!r}: unexpected rank {value.ndim} ({value.shape})")
    if kind == "linear":
        return value.T
    if kind == "heads":
        return value.reshape(heads, -1)
    if kind == "in_heads":  # [heads*Dh, in] -> [in, heads, Dh]
        return value.T.reshape(value.shape[1], heads, -1)
    if kind == "heads_out":  # [out, heads*Dh] -> [heads, Dh, out]
        return value.T.reshape(heads, -1, value.shape[0])
    raise AssertionError(kind)


def convert_hf_bert(
    state_dict: Mapping[str, Any],
    cfg: BertConfig,
    *,
    prefix: str | None = None,
    allow_missing: bool = False,
) -> tuple[dict, ConversionReport]:
    """Converts a Hugging Face BERT state dict into ``BertEncoder(cfg)`` parameters.

    Args:
      state_dict: name -> torch.Tensor | np.ndarray.
      cfg: the target config; hidden size, layers, heads, vocabulary and positions must match.
        With ``cfg.cross_attention`` the ``crossattention.*`` keys are required (unless
        ``allow_missing``); without it they are reported as unused.
      prefix: key prefix of the BERT; None detects it from ``embeddings.word_embeddings.weight``.
      allow_missing: return partial params instead of raising when parameters stay unfilled
        (e.g. BERT weights into a fusion encoder whose cross-attention starts from scratch).
    Returns:
      (params, report): a pure dict of float32 numpy arrays matching
      ``nnx.to_pure_dict(nnx.state(BertEncoder(cfg), nnx.Param))`` (layers stacked on a leading
      axis) and the report of unused / skipped / missing keys, by name.
    Raises:
      ValueError naming the key on a shape mismatch; KeyError naming unfilled parameters.
    """
    prefix = detect_prefix(state_dict) if prefix is None else prefix
    report = ConversionReport()
    target = ParamTarget(abstract_params(lambda: BertEncoder(cfg, rngs=nnx.Rngs(0))))
    layers = LayerStacks(target, "layers", cfg.num_layers)

    for full_key, key, raw in keys_under(state_dict, prefix, report):
        layer = layer_of(_LAYER, key, full_key, cfg.num_layers, "layer")
        if layer:
            index, rest = layer
            entry = _LAYER_KEYS.get(rest)
            if entry is None or (entry[0][0].startswith("cross") and not cfg.cross_attention):
                report.unused.append(full_key)
                continue
            path, kind = entry
            value = to_numpy(raw, full_key)
            try:
                value = _transform(kind, value, cfg.heads, full_key)
            except ValueError as exc:
                if full_key in str(exc):
                    raise
                raise ValueError(
                    f"state dict key {full_key!r}: shape {value.shape} does not fit "
                    f"{cfg.heads} heads of the config ({exc})"
                ) from exc
            layers.put(path, index, value, full_key)
        elif key in _EMBED_KEYS:
            target.set(("embeddings", *_EMBED_KEYS[key]), to_numpy(raw, full_key), full_key)
        else:
            report.unused.append(full_key)

    layers.write(f"{prefix}encoder.layer.N -> layers")
    return finish(target, report, allow_missing), report


def load_bert(model: BertEncoder, params: Mapping) -> BertEncoder:
    """Writes converted ``params`` into ``model`` in place; partial params keep the init values."""
    return write_params(model, params)
