"""timm EVA / EVA-CLIP visual tower state dict -> ``gram_jax.models.vit.VisionTransformer`` params.

Accepted key layouts (the visual tower of EVA01-CLIP-g/14 and friends):

- timm ``Eva`` (``eva_giant_patch14_clip_224``): ``patch_embed.proj.weight``, ``cls_token``,
  ``pos_embed``, ``blocks.N.{norm1,norm2}.{weight,bias}``, ``blocks.N.attn.qkv.weight`` (fused,
  [3W, W]), ``blocks.N.attn.{q_bias,v_bias}``, ``blocks.N.attn.proj.*``, ``blocks.N.mlp.fc{1,2}.*``,
  ``norm.*``, ``head.*``;
- EVA-CLIP checkpoints (``EVA01_CLIP_g_14_psz14_s11B.pt``): the same names under ``visual.``
  (released model/vision_encoders); the text tower and ``logit_scale`` are outside the prefix;
- any other prefix (e.g. the vision tower inside a GRAM release), given explicitly.

PyTorch ``Linear`` weights are [out, in]; ours are [in, ...out] with heads split:
``query.kernel`` [W, H, Dh] = Wq.T reshaped. A key bias (EVA has none; timm keeps a zero buffer)
is dropped when zero: it adds a per-query constant to every logit, which softmax ignores.
``head.*`` (the CLIP projection to the joint space) has no counterpart: GRAM projects the CLS token
with its own head, so it is reported as unused.
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
from gram_jax.models.vit import VisionTransformer, ViTConfig, resize_pos_embed

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")

# Per-block source name -> (our path inside ``blocks``, transform kind).
_BLOCK_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "norm1.weight": (("norm1", "scale"), "copy"),
    "norm1.bias": (("norm1", "bias"), "copy"),
    "norm2.weight": (("norm2", "scale"), "copy"),
    "norm2.bias": (("norm2", "bias"), "copy"),
    "attn.q_bias": (("attn", "query", "bias"), "head_bias"),
    "attn.v_bias": (("attn", "value", "bias"), "head_bias"),
    "attn.proj.weight": (("attn", "out", "kernel"), "out_kernel"),
    "attn.proj.bias": (("attn", "out", "bias"), "copy"),
    "mlp.fc1.weight": (("mlp", "fc1", "kernel"), "linear"),
    "mlp.fc1.bias": (("mlp", "fc1", "bias"), "copy"),
    "mlp.fc2.weight": (("mlp", "fc2", "kernel"), "linear"),
    "mlp.fc2.bias": (("mlp", "fc2", "bias"), "copy"),
}


def detect_prefix(state_dict: Mapping[str, Any]) -> str:
    """Key prefix of the tower: '' (timm), 'visual.' (EVA-CLIP) or 'visual.trunk.' (OpenCLIP)."""
    for prefix in ("visual.trunk.", "visual.", ""):
        if prefix + "pos_embed" in state_dict:
            return prefix
    raise KeyError(
        "no EVA visual tower found: expected a key 'pos_embed', 'visual.pos_embed' or "
        "'visual.trunk.pos_embed' (pass prefix= for other layouts)"
    )


def _transform(kind: str, value: np.ndarray, cfg: ViTConfig, key: str) -> np.ndarray:
    heads, head_dim, width = cfg.heads, cfg.width // cfg.heads, cfg.width
    if kind == "copy":
        return value
    if kind == "linear":
        if value.ndim != 2:
            raise ValueError(
                f"state dict key {key!r}: expected a 2-D Linear weight, got {value.shape}"
            )
        return value.T
    if kind == "head_bias":
        if value.shape != (width,):
            raise ValueError(
                f"state dict key {key!r}: expected shape ({width},), got {value.shape}"
            )
        return value.reshape(heads, head_dim)
    if kind == "out_kernel":
        if value.shape != (width, width):
            raise ValueError(
                f"state dict key {key!r}: expected ({width}, {width}), got {value.shape}"
            )
        return value.T.reshape(heads, head_dim, width)
    raise AssertionError(kind)


def convert_eva(
    state_dict: Mapping[str, Any],
    cfg: ViTConfig,
    *,
    prefix: str | None = None,
    allow_missing: bool = False,
) -> tuple[dict, ConversionReport]:
    """Converts an EVA visual-tower state dict into ``VisionTransformer(cfg)`` parameters.

    Args:
      state_dict: name -> torch.Tensor | np.ndarray (a checkpoint's ``model``/``state_dict``).
      cfg: the target config; width, depth, heads, mlp size and patch size must match the weights.
        A position table for another grid is resized to ``cfg.image_size`` (bicubic).
      prefix: key prefix of the visual tower; None detects '', 'visual.' or 'visual.trunk.'.
      allow_missing: return partial params instead of raising when a parameter stays unfilled.
    Returns:
      (params, report): params is a pure dict of float32 numpy arrays matching
      ``nnx.to_pure_dict(nnx.state(VisionTransformer(cfg), nnx.Param))`` (blocks stacked on a
      leading layer axis); report lists unused / skipped / missing keys by name.
    Raises:
      ValueError naming the key on a shape mismatch; KeyError naming missing parameters.
    """
    prefix = detect_prefix(state_dict) if prefix is None else prefix
    report = ConversionReport()
    target = ParamTarget(abstract_params(lambda: VisionTransformer(cfg, rngs=nnx.Rngs(0))))
    width = cfg.width
    blocks = LayerStacks(target, "blocks", cfg.depth)

    for full_key, key, raw in keys_under(state_dict, prefix, report):
        block = layer_of(_BLOCK, key, full_key, cfg.depth, "block")
        if block:
            index, rest = block
            value = to_numpy(raw, full_key)
            if rest == "attn.qkv.weight":
                if value.shape != (3 * width, width):
                    raise ValueError(
                        f"state dict key {full_key!r}: expected ({3 * width}, {width}), "
                        f"got {value.shape}"
                    )
                for name, part in zip(
                    ("query", "key", "value"), np.split(value, 3, axis=0), strict=True
                ):
                    kernel = part.T.reshape(width, cfg.heads, width // cfg.heads)
                    blocks.put(("attn", name, "kernel"), index, kernel, full_key)
            elif rest == "attn.k_bias":
                if np.any(value != 0):
                    report.unused.append(full_key)
                    report.notes.append(f"{full_key} is non-zero; dropped (softmax-invariant)")
            elif rest in _BLOCK_KEYS:
                path, kind = _BLOCK_KEYS[rest]
                blocks.put(path, index, _transform(kind, value, cfg, full_key), full_key)
            else:
                report.unused.append(full_key)
            continue
        value = to_numpy(raw, full_key)
        if key == "patch_embed.proj.weight":
            if value.ndim != 4 or value.shape[1] != 3:
                raise ValueError(
                    f"state dict key {full_key!r}: expected [W, 3, p, p], got {value.shape}"
                )
            target.set(("patch_embed", "kernel"), value.transpose(2, 3, 1, 0), full_key)
        elif key == "patch_embed.proj.bias":
            target.set(("patch_embed", "bias"), value, full_key)
        elif key == "cls_token":
            target.set(("cls_token",), value.reshape(-1), full_key)
        elif key == "pos_embed":
            table = value.reshape(value.shape[-2], value.shape[-1])
            if table.shape[0] != 1 + cfg.grid**2:
                report.notes.append(
                    f"{full_key}: resized from {table.shape[0] - 1} to {cfg.grid**2} patches"
                )
                table = np.asarray(resize_pos_embed(table, (cfg.grid, cfg.grid)))
            target.set(("pos_embed",), table, full_key)
        elif key in ("norm.weight", "norm.bias"):
            target.set(("norm", "scale" if key.endswith("weight") else "bias"), value, full_key)
        else:
            report.unused.append(full_key)

    blocks.write(f"{prefix}blocks.N")
    return finish(target, report, allow_missing), report


def load_eva(model: VisionTransformer, params: Mapping) -> VisionTransformer:
    """Writes converted ``params`` into ``model`` in place."""
    return write_params(model, params)
