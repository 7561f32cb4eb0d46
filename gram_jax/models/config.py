"""``model_config``: every key of the GRAM model config, with defaults and documentation.

Keys (a ``ml_collections.ConfigDict``):

- ``size``: 'tiny' (tests, CPU), 'base' (BERT-base, ViT-B/16, BEATs-base) or 'paper' (BERT-base,
  EVA01-CLIP-g/14, BEATs-base: the reference model). It fills ``text.size``, ``vision.size`` and
  ``audio.size``, which can then be overridden one by one.
- ``modalities``: 2..5 of 'text', 'video', 'audio', 'subtitle', 'depth' (default: the first 3).
- ``embed_dim``: D of the joint space (512 in the reference).
- ``dtype``: matmul/activation dtype name ('float32'; 'bfloat16' on accelerators);
  ``param_dtype``: 'float32'; ``remat_policy``: 'none' | 'full' | 'dots' | 'dots_no_batch';
  ``scan_layers``: True scans over layers (False unrolls; same parameters).
- ``text``: ``size`` ('tiny' | 'minilm' | 'base'), ``dropout_rate`` 0.1, ``attn_dropout_rate`` 0.1,
  ``pool`` 'cls' (the reference) or 'mean' (the mean of the real tokens, as sentence-transformers
  pool MiniLM).
- ``vision``: ``size`` ('tiny' | 'base' | 'large' | 'giant'), ``drop_path_rate`` (0.0; the
  reference trains with 0.4), ``image_size`` (0 = the size's default; sets the position table),
  ``max_frames`` 8 (rows of the fusion frame embedding; nearest-resized to the frame count),
  ``frame_table`` 'train_frames' (a run's finalised config sizes ``max_frames`` and
  ``audio.max_clips`` to the training frames/clips, as the released code does, so every row is
  trained; 'max_frames' keeps ``max_frames`` as given, e.g. a table of 8 rows trained on 4 frames
  leaves rows 1, 3, 5, 7 untrained yet read at 8-frame evaluation; gram_jax.config.fidelity row 4),
  ``patch_size`` (0 = the size's default), ``pool`` 'cls' (EVA-CLIP, the reference) or 'mean'
  (the mean of the patch tokens), ``stem_channels`` () (a convolutional stem: one 3x3 stride-2
  conv per entry; see ``gram_jax.models.vit.ViTConfig``). The TriDigits towers, trained from
  scratch, use the mean and a conv stem.
- ``audio``: ``size`` ('tiny' | 'base'), ``dropout_rate`` 0.1, ``attn_dropout_rate`` 0.1,
  ``max_clips`` 2 (rows of the fusion clip embedding), ``layerdrop`` 0.0 (BEATs
  ``encoder_layerdrop``: each layer skipped in training with this probability),
  ``layer_grad_scale`` 1.0 (BEATs ``layer_wise_gradient_decay_ratio``: gradient multiplier per
  layer). The public BEATs_iter3+ checkpoint cfg, which the released code trains with, has
  dropout 0, attention dropout 0, layer drop 0.05 and ratio 0.6 (gram_jax.config.fidelity row 9).
- ``matching``: ``enabled`` True (cross-attention in BERT + matching head),
  ``condition_modalities`` ('video', 'audio') (the training tokens; the reference always uses
  these two), ``eval_condition`` 'train' (evaluation re-ranks with the same tokens) or 'data'
  (every data modality of the model but depth, e.g. video + audio + subtitle: the released
  evaluation takes the tokens of its task's last subtask, ``ret%tvas``; the subtitle adapter is
  then built, converted and used), ``condition_padding`` 'mask' (cross-attention skips the padding
  of text-like condition tokens) or 'attend' (the released all-ones encoder mask attends to them).
- ``subtitle_if_annotated``: False; True adds 'subtitle' to the modalities whenever the dataset's
  records carry a subtitle field, whatever the paper row (the released code picks its 4-modality
  volume from the data; applied when a run's config is finalised, gram_jax.config.fidelity row 2).
- ``eval_dtype``: '' (evaluate with ``dtype``) or a dtype name for the evaluation towers
  (the released evaluation runs in float32; gram_jax.config.fidelity row 7).
- ``temperature``: ``init`` 0.07, ``parametrization`` 'log' | 'reference', ``min_value`` 0.01,
  ``max_value`` 1.0, ``learnable`` True (see ``gram_jax.models.temperature.Temperature``).
- ``video_mean`` / ``video_std``: the per-channel normalisation of uint8 frames (CLIP values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

TEXT_LIKE = ("text", "subtitle")
VISION_LIKE = ("video", "depth")

# Tower sizes of each model size.
MODEL_SIZES: dict[str, dict[str, str]] = {
    "tiny": dict(text="tiny", vision="tiny", audio="tiny"),
    "base": dict(text="base", vision="base", audio="base"),
    "paper": dict(text="base", vision="giant", audio="base"),
}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def model_config(
    size: str = "tiny",
    modalities: tuple[str, ...] = ("text", "video", "audio"),
    **overrides: Any,
) -> ml_collections.ConfigDict:
    """The model ConfigDict of ``size`` for ``modalities``; ``overrides`` update keys.

    An override of a section (``text``, ``vision``, ``audio``, ``matching``, ``temperature``) is a
    mapping merged into it: ``model_config('tiny', text=dict(dropout_rate=0.0))``.
    Raises ValueError naming an unknown size or key.
    """
    if size not in MODEL_SIZES:
        raise ValueError(
            f"model_config: unknown size {size!r}; expected one of {list(MODEL_SIZES)}"
        )
    sizes = MODEL_SIZES[size]
    c = ml_collections.ConfigDict()
    c.size = size
    c.modalities = tuple(modalities)
    c.embed_dim = 512
    c.dtype = "float32"
    c.param_dtype = "float32"
    c.remat_policy = "none"
    c.scan_layers = True
    c.text = dict(size=sizes["text"], dropout_rate=0.1, attn_dropout_rate=0.1, pool="cls")
    c.vision = dict(
        size=sizes["vision"],
        drop_path_rate=0.0,
        image_size=0,
        patch_size=0,
        max_frames=8,
        frame_table="train_frames",
        pool="cls",
        stem_channels=(),
    )
    c.audio = dict(
        size=sizes["audio"],
        dropout_rate=0.1,
        attn_dropout_rate=0.1,
        max_clips=2,
        layerdrop=0.0,
        layer_grad_scale=1.0,
    )
    c.matching = dict(
        enabled=True,
        condition_modalities=("video", "audio"),
        eval_condition="train",
        condition_padding="mask",
    )
    c.subtitle_if_annotated = False
    c.eval_dtype = ""
    c.temperature = dict(
        init=0.07, parametrization="log", min_value=0.01, max_value=1.0, learnable=True
    )
    c.video_mean = CLIP_MEAN
    c.video_std = CLIP_STD
    _apply(c, overrides, "model_config")
    return c


def _apply(c: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> None:
    for key, value in overrides.items():
        if key not in c:
            raise ValueError(f"{where}: unknown key {key!r}; expected one of {sorted(c.keys())}")
        if isinstance(c[key], ml_collections.ConfigDict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: section {key!r} must be given a mapping, got {value!r}")
            _apply(c[key], value, f"{where}.{key}")
        else:
            c[key] = tuple(value) if isinstance(value, list) else value


def tiny_model_config(
    config: ml_collections.ConfigDict | None = None,
) -> ml_collections.ConfigDict:
    """A copy of ``config`` (default: ``model_config()``) with tiny towers and float32 compute.

    Keeps the modalities, matching and temperature settings; for CPU smoke runs and tests.
    """
    base = model_config() if config is None else config
    out = ml_collections.ConfigDict(base.to_dict())
    out.size = "tiny"
    out.text.size = out.vision.size = out.audio.size = "tiny"
    out.vision.image_size = 0
    out.dtype = "float32"
    out.remat_policy = "none"
    return out
