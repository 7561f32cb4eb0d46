"""Released GRAM (ispamm/GRAM, a VAST fork) checkpoint -> ``GramModel`` params.

The released state dict (``model/gram.py`` + ``model/general_module.py`` of the reference) holds:

  ``multimodal_encoder.bert.*``      BERT-base with cross-attention -> ``bert`` (``hf_bert``)
  ``multimodal_encoder.cls.*``       MLM head (captioning leftovers): unused
  ``vision_encoder.visual.*``        EVA01-CLIP-g/14 visual tower -> ``vision`` (``eva``)
  ``vision_encoder.{text,...}``      EVA-CLIP text tower, logit scale: unused
  ``audio_encoder.*``                BEATs -> ``audio`` (``beats``)
  ``contra_head_{t,s,v,a,d}.linear.weight``  [512, width] -> ``heads.<m>.proj.kernel``
  ``contra_head_{va,vs,vas}.*``      VAST fusion heads GRAM never uses: unused
  ``contra_temp``                    tau -> ``contra_temperature`` (log tau for 'log')
  ``itm_head.{linear1,layernorm,linear2}.*`` -> ``match_head.{dense,norm,out}``
  ``hidden_trans_{vision,audio,subtitle}_multimodal.{0,1}.*``
                                     -> ``condition_tokens.<m>.{linear,norm}``
  ``{vision,audio}_frame_embedding`` [1, n, 768] -> ``condition_tokens.<m>.frame_embedding``
    (nearest-resized to the config's max frames/clips, as the reference's ``modify_checkpoint``)
  ``{vision,audio,subtitle}_type_embeddings`` [1, 1, 768] -> ``condition_tokens.<m>.type_embedding``

Older VAST names are accepted as the reference renames them (``video`` -> ``vision``,
``evaclip_model`` -> ``vision_encoder``), and a DDP ``module.`` prefix is stripped. Parts of the
checkpoint whose modality the config lacks are reported as unused; every unused key is named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from gram_jax.convert.beats import convert_beats
from gram_jax.convert.eva import convert_eva
from gram_jax.convert.hf_bert import convert_hf_bert
from gram_jax.convert.torch_state import (
    ConversionReport,
    ParamTarget,
    abstract_params,
    finish,
    to_numpy,
    write_params,
)
from gram_jax.models.gram import GramModel
from gram_jax.models.heads import nearest_indices

BERT_PREFIX = "multimodal_encoder.bert."
VISION_PREFIX = "vision_encoder.visual."
AUDIO_PREFIX = "audio_encoder."
# Our tower -> (its key prefix in the release, its converter, the GramModel attribute of its cfg).
TOWERS = {
    "bert": (BERT_PREFIX, convert_hf_bert, "text_cfg"),
    "vision": (VISION_PREFIX, convert_eva, "vision_cfg"),
    "audio": (AUDIO_PREFIX, convert_beats, "audio_cfg"),
}

# Our modality -> the reference's contrastive head.
CONTRA_HEADS = {"text": "t", "subtitle": "s", "video": "v", "audio": "a", "depth": "d"}
# Our condition modality -> the reference's name in the fusion adapters.
CONDITION_NAMES = {"video": "vision", "audio": "audio", "subtitle": "subtitle"}


def normalize_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strips ``module.`` and applies the reference's renames of old VAST checkpoints."""
    out = {}
    for key, value in state_dict.items():
        new = key[len("module.") :] if key.startswith("module.") else key
        if new.startswith("evaclip_model."):
            new = "vision_encoder." + new[len("evaclip_model.") :]
        if not new.startswith(("vision_encoder.", "audio_encoder.", "multimodal_encoder.")):
            new = new.replace("video", "vision")
        if new in out:
            raise KeyError(f"state dict keys {key!r} and another both map to {new!r}")
        out[new] = value
    return out


def convert_gram_release(
    state_dict: Mapping[str, Any],
    config: ml_collections.ConfigDict,
    *,
    allow_missing: bool = False,
) -> tuple[dict, ConversionReport]:
    """Converts a released GRAM state dict into ``GramModel(config)`` parameters.

    Args:
      state_dict: name -> torch.Tensor | np.ndarray (the checkpoint's model state dict).
      config: ``gram_jax.models.gram.model_config(...)``; tower sizes must match the weights
        (the release is ``size='paper'``: BERT-base, EVA01-CLIP-g/14, BEATs-base).
      allow_missing: return partial params instead of raising when parameters stay unfilled.
    Returns:
      (params, report): a float32 numpy pure dict matching
      ``nnx.to_pure_dict(nnx.state(GramModel(config), nnx.Param))`` and the report naming every
      unused key and every unfilled parameter.
    Raises:
      ValueError naming the key on a shape mismatch; KeyError naming unfilled parameters.
    """
    state = normalize_keys(state_dict)
    report = ConversionReport()
    target = ParamTarget(abstract_params(lambda: GramModel(config, rngs=nnx.Rngs(0))))
    model = nnx.eval_shape(lambda: GramModel(config, rngs=nnx.Rngs(0)))
    used: set[str] = set()

    # Towers: each converter sees only its own prefix. The BERT is always built (it is the fusion
    # encoder); vision and audio only when the config has their modalities.
    for name, (prefix, convert, cfg_attr) in TOWERS.items():
        if not hasattr(model, name):
            continue
        tower_sd = {k: v for k, v in state.items() if k.startswith(prefix)}
        used.update(tower_sd)
        params, sub = convert(
            tower_sd, getattr(model, cfg_attr), prefix=prefix, allow_missing=allow_missing
        )
        target.set_tree((name,), params, prefix)
        report.unused.extend(sub.unused)
        report.notes.extend(f"{name}: {n}" for n in sub.notes)

    def take(key: str) -> np.ndarray | None:
        if key not in state:
            return None
        used.add(key)
        return to_numpy(state[key], key)

    def put(path: tuple, key: str, transform=lambda a: a) -> None:
        value = take(key)
        if value is not None:
            target.set(path, transform(value), key)

    linear_t = lambda a: a.T  # noqa: E731 - PyTorch Linear [out, in] -> ours [in, out]
    for m in model.modalities:
        put(
            ("heads", m, "proj", "kernel"), f"contra_head_{CONTRA_HEADS[m]}.linear.weight", linear_t
        )
    if model.matching:
        put(("match_head", "dense", "kernel"), "itm_head.linear1.weight", linear_t)
        put(("match_head", "dense", "bias"), "itm_head.linear1.bias")
        put(("match_head", "norm", "scale"), "itm_head.layernorm.weight")
        put(("match_head", "norm", "bias"), "itm_head.layernorm.bias")
        put(("match_head", "out", "kernel"), "itm_head.linear2.weight", linear_t)
        put(("match_head", "out", "bias"), "itm_head.linear2.bias")
        for m in model.condition_modalities:
            ref = CONDITION_NAMES[m]
            base = ("condition_tokens", m)
            trans = f"hidden_trans_{ref}_multimodal"
            put((*base, "linear", "kernel"), f"{trans}.0.weight", linear_t)
            put((*base, "linear", "bias"), f"{trans}.0.bias")
            put((*base, "norm", "scale"), f"{trans}.1.weight")
            put((*base, "norm", "bias"), f"{trans}.1.bias")
            put((*base, "type_embedding"), f"{ref}_type_embeddings", lambda a: a.reshape(-1))
            if m != "subtitle":
                key = f"{ref}_frame_embedding"
                rows = target.shape_of((*base, "frame_embedding"))[0]
                put(
                    (*base, "frame_embedding"),
                    key,
                    lambda a, r=rows, k=key: _frames(a, r, k, report),
                )
    _put_temperature(model, take, target, report)

    report.unused.extend(sorted(k for k in state if k not in used))
    return finish(target, report, allow_missing), report


def _frames(table: np.ndarray, rows: int, key: str, report: ConversionReport) -> np.ndarray:
    """[1, n, H] frame embeddings -> [rows, H], nearest-resized like the reference."""
    table = table.reshape(-1, table.shape[-1])
    if table.shape[0] != rows:
        report.notes.append(f"{key}: nearest-resized from {table.shape[0]} to {rows} rows")
        table = table[nearest_indices(rows, table.shape[0])]
    return table


def _put_temperature(model, take, target: ParamTarget, report: ConversionReport) -> None:
    tau = take("contra_temp")
    if tau is None:
        return
    tau = float(np.asarray(tau).reshape(()))
    temp = model.contra_temperature
    if not temp.learnable:
        report.notes.append(f"contra_temp={tau:.6g} ignored: the config's temperature is fixed")
    elif temp.parametrization == "log":
        if not tau > 0:
            raise ValueError(f"state dict key 'contra_temp': tau={tau} is not positive")
        clamped = min(max(tau, temp.min_value), temp.max_value)
        if clamped != tau:
            report.notes.append(
                f"contra_temp={tau:.6g} lies outside the clamp; tau reads {clamped}"
            )
        value = np.asarray(math.log(tau), np.float32)
        target.set(("contra_temperature", "log_temperature"), value, "contra_temp")
    else:
        value = np.asarray(tau, np.float32)
        target.set(("contra_temperature", "temperature"), value, "contra_temp")


def load_gram_release(model, params: Mapping):
    """Writes converted ``params`` into a ``GramModel`` in place (missing entries keep init)."""
    return write_params(model, params)
