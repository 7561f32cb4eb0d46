"""BEATs checkpoint -> ``gram_jax.models.audio.AudioTransformer`` params.

A public BEATs checkpoint (``BEATs_iter3_plus_AS2M.pt``) is ``{'cfg': dict, 'model': state_dict}``.
``audio_config_from_beats_cfg`` turns the cfg into an ``AudioConfig``; ``convert_beats`` maps the
state dict. Key layout (read from microsoft/unilm beats/):

  patch_embedding.weight [512, 1, 16, 16]          -> patch_embedding.kernel [16, 16, 512]
  layer_norm.{weight,bias}                         -> layer_norm.{scale,bias}
  post_extract_proj.{weight,bias}                  -> post_extract_proj.{kernel,bias}
  encoder.pos_conv.0.weight_v [W, W/g, K]          -> pos_conv.weight_v [K, W/g, W]
  encoder.pos_conv.0.weight_g [1, 1, K]            -> pos_conv.weight_g [K]
    (or the ``parametrizations.weight.original0/1`` names of newer torch weight norm)
  encoder.pos_conv.0.bias                          -> pos_conv.bias
  encoder.layer_norm.*                             -> encoder_layer_norm.*
  encoder.layers.N.self_attn.{q,k,v}_proj.*        -> layers.{query,key,value}.* [W, H, Dh]
  encoder.layers.N.self_attn.out_proj.*            -> layers.out.* [H, Dh, W]
  encoder.layers.N.self_attn.grep_linear.*         -> layers.self_attn.grep_linear.*
  encoder.layers.N.self_attn.grep_a [1, H, 1, 1]   -> layers.self_attn.grep_a [H]
  encoder.layers.0.self_attn.relative_attention_bias.weight -> rel_pos_bias [buckets, H]
    (the same tensor is listed under every layer; copies that differ from layer 0 are reported)
  encoder.layers.N.{self_attn_layer_norm,final_layer_norm,fc1,fc2}.*

``predictor.*`` (fine-tuned AudioSet classifiers) has no counterpart and is reported as unused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from gram_jax.convert.torch_state import (
    ConversionReport,
    ParamTarget,
    abstract_params,
    finish,
    stack_layer_arrays,
    to_numpy,
    write_params,
)
from gram_jax.models.audio import AudioConfig, AudioTransformer

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")

# BEATs cfg key -> AudioConfig field.
_CFG_FIELDS = {
    "input_patch_size": "patch_size",
    "embed_dim": "patch_dim",
    "conv_bias": "conv_bias",
    "encoder_layers": "depth",
    "encoder_embed_dim": "width",
    "encoder_ffn_embed_dim": "mlp_dim",
    "encoder_attention_heads": "heads",
    "conv_pos": "conv_pos",
    "conv_pos_groups": "conv_pos_groups",
    "num_buckets": "num_buckets",
    "max_distance": "max_distance",
    "deep_norm": "deep_norm",
    "dropout": "dropout_rate",
    "attention_dropout": "attn_dropout_rate",
    "activation_dropout": "activation_dropout_rate",
    "layer_wise_gradient_decay_ratio": "layer_grad_scale",
    "encoder_layerdrop": "layerdrop",
}
# Variants of the public code this tower does not implement: cfg key -> the only supported value.
_REQUIRED = {
    "layer_norm_first": False,
    "relative_position_embedding": True,
    "gru_rel_pos": True,
    "activation_fn": "gelu",
}


def audio_config_from_beats_cfg(cfg: Mapping[str, Any], **overrides: Any) -> AudioConfig:
    """``AudioConfig`` from a BEATs checkpoint's ``cfg`` dict (unknown keys are ignored).

    Raises ValueError naming the cfg key for variants the tower does not implement.
    """
    for key, value in _REQUIRED.items():
        if key in cfg and cfg[key] != value:
            raise ValueError(f"BEATs cfg[{key!r}] = {cfg[key]!r}: only {value!r} is supported")
    # Layer drop (public BEATs_iter3+ cfgs carry 0.05) is a training-time behaviour of the tower;
    # an input dropout is not implemented.
    if cfg.get("dropout_input", 0.0):
        raise ValueError(
            f"BEATs cfg['dropout_input'] = {cfg['dropout_input']!r}: only 0 is supported"
        )
    fields = {ours: cfg[theirs] for theirs, ours in _CFG_FIELDS.items() if theirs in cfg}
    return AudioConfig(**{**fields, **overrides})


def _per_layer_transform(rest: str, value: np.ndarray, cfg: AudioConfig, key: str):
    """(path inside ``layers``, converted array) for one layer key, or None if unknown."""
    heads, dh, w = cfg.heads, cfg.width // cfg.heads, cfg.width
    proj = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
    parts = rest.split(".")
    if parts[0] == "self_attn" and len(parts) == 3 and parts[1] in proj:
        name = proj[parts[1]]
        if parts[2] == "weight":
            _expect(value, (w, w), key)
            return ("self_attn", name, "kernel"), value.T.reshape(w, heads, dh)
        _expect(value, (w,), key)
        return ("self_attn", name, "bias"), value.reshape(heads, dh)
    if rest == "self_attn.out_proj.weight":
        _expect(value, (w, w), key)
        return ("self_attn", "out", "kernel"), value.T.reshape(heads, dh, w)
    if rest == "self_attn.out_proj.bias":
        return ("self_attn", "out", "bias"), value
    if rest == "self_attn.grep_linear.weight":
        return ("self_attn", "grep_linear", "kernel"), value.T
    if rest == "self_attn.grep_linear.bias":
        return ("self_attn", "grep_linear", "bias"), value
    if rest == "self_attn.grep_a":
        return ("self_attn", "grep_a"), value.reshape(-1)
    for norm in ("self_attn_layer_norm", "final_layer_norm"):
        if rest == f"{norm}.weight":
            return (norm, "scale"), value
        if rest == f"{norm}.bias":
            return (norm, "bias"), value
    for fc in ("fc1", "fc2"):
        if rest == f"{fc}.weight":
            return ("mlp", fc, "kernel"), value.T
        if rest == f"{fc}.bias":
            return ("mlp", fc, "bias"), value
    return None


def _expect(value: np.ndarray, shape: tuple[int, ...], key: str) -> None:
    if value.shape != shape:
        raise ValueError(f"state dict key {key!r}: expected shape {shape}, got {value.shape}")


def convert_beats(
    state_dict: Mapping[str, Any],
    cfg: AudioConfig,
    *,
    prefix: str = "",
    allow_missing: bool = False,
) -> tuple[dict, ConversionReport]:
    """Converts a BEATs ``model`` state dict into ``AudioTransformer(cfg)`` parameters.

    Args:
      state_dict: name -> torch.Tensor | np.ndarray, the checkpoint's ``model`` entry (or a larger
        state dict whose BEATs keys start with ``prefix``).
      cfg: the target config (e.g. from ``audio_config_from_beats_cfg(checkpoint['cfg'])``).
      prefix: key prefix of the BEATs module inside ``state_dict``.
      allow_missing: return partial params instead of raising when a parameter stays unfilled.
    Returns:
      (params, report): float32 numpy pure dict matching ``nnx.state(model, nnx.Param)`` (layers
      stacked on a leading axis) and the report of unused / skipped / missing keys.
    Raises:
      ValueError naming the key on a shape mismatch; KeyError naming unfilled parameters.
    """
    report = ConversionReport()
    target = ParamTarget(abstract_params(lambda: AudioTransformer(cfg, rngs=nnx.Rngs(0))))
    per_layer: dict[tuple[str, ...], list] = {}
    rel_bias_copies: dict[int, tuple[str, np.ndarray]] = {}
    top = {
        "layer_norm.weight": (("layer_norm", "scale"), False),
        "layer_norm.bias": (("layer_norm", "bias"), False),
        "post_extract_proj.weight": (("post_extract_proj", "kernel"), True),
        "post_extract_proj.bias": (("post_extract_proj", "bias"), False),
        "encoder.pos_conv.0.bias": (("pos_conv", "bias"), False),
        "encoder.layer_norm.weight": (("encoder_layer_norm", "scale"), False),
        "encoder.layer_norm.bias": (("encoder_layer_norm", "bias"), False),
        "patch_embedding.bias": (("patch_embedding", "bias"), False),
    }
    for full_key, raw in state_dict.items():
        if not full_key.startswith(prefix):
            report.skipped.append(full_key)
            continue
        key = full_key[len(prefix) :]
        value = to_numpy(raw, full_key)
        match = _LAYER.match(key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            if index >= cfg.depth:
                raise ValueError(
                    f"state dict key {full_key!r}: layer {index} but the config has depth "
                    f"{cfg.depth}"
                )
            if rest == "self_attn.relative_attention_bias.weight":
                rel_bias_copies[index] = (full_key, value)
                continue
            mapped = _per_layer_transform(rest, value, cfg, full_key)
            if mapped is None:
                report.unused.append(full_key)
                continue
            path, array = mapped
            array = target.check_layer(("layers", *path), array, full_key)
            per_layer.setdefault(path, [None] * cfg.depth)[index] = array
        elif key == "patch_embedding.weight":
            p = cfg.patch_size
            _expect(value, (cfg.patch_dim, 1, p, p), full_key)
            target.set(("patch_embedding", "kernel"), value[:, 0].transpose(1, 2, 0), full_key)
        elif key in (
            "encoder.pos_conv.0.weight_v",
            "encoder.pos_conv.0.parametrizations.weight.original1",
        ):
            target.set(("pos_conv", "weight_v"), value.transpose(2, 1, 0), full_key)
        elif key in (
            "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv.0.parametrizations.weight.original0",
        ):
            if value.size != cfg.conv_pos:
                raise ValueError(
                    f"state dict key {full_key!r}: weight norm magnitude of shape {value.shape}; "
                    f"expected one value per kernel tap ({cfg.conv_pos}, i.e. weight_norm dim=2)"
                )
            target.set(("pos_conv", "weight_g"), value.reshape(-1), full_key)
        elif key in top:
            path, transpose = top[key]
            target.set(path, value.T if transpose else value, full_key)
        else:
            report.unused.append(full_key)

    if 0 not in rel_bias_copies:
        raise KeyError(
            f"state dict has no {prefix}encoder.layers.0.self_attn.relative_attention_bias.weight"
        )
    bias_key, table = rel_bias_copies.pop(0)
    target.set(("rel_pos_bias",), table, bias_key)
    for _, (other_key, other) in sorted(rel_bias_copies.items()):
        if other.shape != table.shape or not np.array_equal(other, table):
            report.unused.append(other_key)
            report.notes.append(f"{other_key} differs from layer 0's table; only layer 0's is used")
    for path, arrays in per_layer.items():
        what = f"{prefix}encoder.layers.N." + ".".join(path)
        target.set(("layers", *path), stack_layer_arrays(arrays, what), what)
    return finish(target, report, allow_missing), report


def load_beats(model: AudioTransformer, params: Mapping) -> AudioTransformer:
    """Writes converted ``params`` into ``model`` in place."""
    return write_params(model, params)
