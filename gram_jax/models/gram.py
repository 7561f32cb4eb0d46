"""The GRAM model: towers per modality, projection heads, fusion condition tokens, matching head.

Modalities (2..5 of them, paper Sec. 3 and 4):
  ``text`` and ``subtitle``: one shared BERT (``bert.BertEncoder``), CLS token -> head;
  ``video`` and ``depth``: one shared EVA-compatible ViT (``vit.VisionTransformer``), per-frame CLS
  mean over frames -> head (uint8 frames are normalised on device with the CLIP mean/std; float
  frames are taken as already normalised);
  ``audio``: the BEATs-compatible tower (``audio.AudioTransformer``), mean over tokens and clips.
Each head is Linear(width -> ``embed_dim``, no bias) + L2 normalisation (float32 unit vectors).

Matching (the DAM loss, section 3.4-3.5): the tokens of the ``matching.condition_modalities``
(video and audio by default; subtitles possible) pass through per-modality Linear + LayerNorm,
frame/clip and type embeddings, and are concatenated into ``condition`` [B, N, H]; the same BERT
with cross-attention reads them and ``MatchingHead`` scores its CLS token.

Functional use: ``graphdef, state = nnx.split(model)``; ``nnx.merge(graphdef, state).encode(...)``
inside ``jax.jit``; ``nnx.eval_shape(lambda: GramModel(cfg, rngs=nnx.Rngs(0)))`` for shapes. Inside
``jax.grad`` merge from pure dicts or with ``copy=True`` (``nnx.scan`` rejects Variables created at
an outer trace level). In train mode the dropout RNG counters advance: carry ``nnx.RngState``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gram_jax.models import heads
from gram_jax.models.audio import AudioTransformer, audio_config
from gram_jax.models.bert import BertEncoder, bert_config, mean_pool
from gram_jax.models.config import TEXT_LIKE, VISION_LIKE, model_config, tiny_model_config
from gram_jax.models.temperature import Temperature
from gram_jax.models.vit import VisionTransformer, vit_config

__all__ = ["Encoded", "GramModel", "model_config", "tiny_model_config"]

Array = jax.Array


class Encoded(NamedTuple):
    """Output of ``GramModel.encode``.

    ``embeddings``: {modality: float32[B, D]} unit vectors; ``condition``: dtype[B, N, H] fusion
    tokens (None when matching is off); ``condition_mask``: int32[B, N] (None likewise).
    """

    embeddings: dict[str, Array]
    condition: Array | None
    condition_mask: Array | None


def _dtype(name: str, key: str):
    try:
        return jnp.dtype(name)
    except TypeError as exc:
        raise ValueError(f"model config {key}={name!r}: not a dtype name") from exc


def _batch_get(batch, key: str, ndim: int) -> Array:
    if key not in batch:
        raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
    value = jnp.asarray(batch[key])
    if value.ndim != ndim:
        raise ValueError(f"batch[{key!r}] must have {ndim} dims, got shape {value.shape}")
    return value


class GramModel(nnx.Module):
    """Towers + heads of GRAM; see the module docstring and ``model_config`` for the config."""

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        modalities = tuple(config.modalities)
        unknown = set(modalities) - set(TEXT_LIKE + VISION_LIKE + ("audio",))
        if unknown or not 2 <= len(modalities) <= 5 or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"model config modalities={modalities}: expected 2..5 distinct names of "
                "text, video, audio, subtitle, depth"
            )
        self.modalities = modalities
        dtype = _dtype(config.dtype, "dtype")
        if config.get("eval_dtype", ""):
            _dtype(config.eval_dtype, "eval_dtype")
        param_dtype = _dtype(config.param_dtype, "param_dtype")
        common = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            remat_policy=config.remat_policy,
            scan_layers=config.scan_layers,
        )
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.matching = bool(config.matching.enabled)
        self.train_condition = tuple(
            m for m in config.matching.condition_modalities if m in modalities
        )
        if config.matching.eval_condition == "train":
            self.eval_condition = self.train_condition
        elif config.matching.eval_condition == "data":
            # The released evaluation's last subtask: every data modality with tokens, Gram order.
            self.eval_condition = tuple(
                m for m in ("video", "audio", "subtitle") if m in modalities
            )
        else:
            raise ValueError(
                f"model config matching.eval_condition={config.matching.eval_condition!r}: "
                "expected 'train' or 'data'"
            )
        if config.matching.condition_padding not in ("mask", "attend"):
            raise ValueError(
                f"model config matching.condition_padding={config.matching.condition_padding!r}: "
                "expected 'mask' or 'attend'"
            )
        self.attend_condition_padding = config.matching.condition_padding == "attend"
        # Every modality with a token adapter (training's and evaluation's), in Gram order.
        self.condition_modalities = tuple(
            m
            for m in ("video", "audio", "subtitle", "depth")
            if m in self.train_condition + self.eval_condition
        )
        if self.matching and not self.train_condition:
            raise ValueError(
                f"model config matching.condition_modalities="
                f"{tuple(config.matching.condition_modalities)} shares none of the modalities "
                f"{modalities}; set matching.enabled=False or name a configured modality"
            )

        text_cfg = bert_config(
            config.text.size,
            dropout_rate=config.text.dropout_rate,
            attn_dropout_rate=config.text.attn_dropout_rate,
            cross_attention=self.matching,
            **common,
        )
        self.text_cfg = text_cfg
        if config.text.pool not in ("cls", "mean"):
            raise ValueError(f"model.text.pool must be 'cls' or 'mean', got {config.text.pool!r}")
        self.text_pool = str(config.text.pool)
        hidden = text_cfg.hidden
        # The BERT is always built: it is the fusion encoder even without a text-like modality.
        self.bert = BertEncoder(text_cfg, rngs=rngs)

        if any(m in VISION_LIKE for m in modalities):
            vis_over = dict(
                drop_path_rate=config.vision.drop_path_rate, pool=config.vision.pool, **common
            )
            if config.vision.image_size:
                vis_over["image_size"] = config.vision.image_size
            if config.vision.patch_size:
                vis_over["patch_size"] = config.vision.patch_size
            if config.vision.stem_channels:
                vis_over["stem_channels"] = tuple(config.vision.stem_channels)
            self.vision_cfg = vit_config(config.vision.size, **vis_over)
            self.vision = VisionTransformer(self.vision_cfg, rngs=rngs)
        if "audio" in modalities:
            self.audio_cfg = audio_config(
                config.audio.size,
                dropout_rate=config.audio.dropout_rate,
                attn_dropout_rate=config.audio.attn_dropout_rate,
                layerdrop=config.audio.layerdrop,
                layer_grad_scale=config.audio.layer_grad_scale,
                **common,
            )
            self.audio = AudioTransformer(self.audio_cfg, rngs=rngs)

        self.heads = nnx.Dict(
            {m: heads.ProjectionHead(self._width(m), config.embed_dim, **kw) for m in modalities}
        )
        if self.matching:
            frames = {
                "video": config.vision.max_frames,
                "audio": config.audio.max_clips,
                "subtitle": 0,
            }
            if "depth" in self.condition_modalities:
                raise ValueError("model config matching.condition_modalities: depth has no tokens")
            self.condition_tokens = nnx.Dict(
                {
                    m: heads.ConditionTokens(self._width(m), hidden, frames[m], **kw)
                    for m in self.condition_modalities
                }
            )
            self.match_head = heads.MatchingHead(hidden, **kw)
        t = config.temperature
        self.contra_temperature = Temperature(
            t.init,
            parametrization=t.parametrization,
            min_value=t.min_value,
            max_value=t.max_value,
            learnable=t.learnable,
        )
        # Static tuples (not state): they are constants of the input contract.
        self.video_mean = tuple(float(v) for v in config.video_mean)
        self.video_std = tuple(float(v) for v in config.video_std)

    def _width(self, modality: str) -> int:
        if modality in TEXT_LIKE:
            return self.text_cfg.hidden
        if modality in VISION_LIKE:
            return self.vision_cfg.width
        return self.audio_cfg.width

    def normalize_frames(self, frames: Array) -> Array:
        """uint8[..., 3] -> float32 ``(x / 255 - mean) / std``; float input is returned as is."""
        if frames.dtype == jnp.uint8:
            x = frames.astype(jnp.float32) / 255.0
            mean = jnp.asarray(self.video_mean, jnp.float32)
            return (x - mean) / jnp.asarray(self.video_std, jnp.float32)
        return frames.astype(jnp.float32)

    def encode(self, batch, *, train: bool, modalities=None) -> Encoded:
        """Batch dict (docs/contracts.md) -> ``Encoded`` (unit embeddings + fusion tokens).

        The fusion tokens are those of ``matching.condition_modalities`` in training and of the
        evaluation condition (``matching.eval_condition``) otherwise.

        ``modalities`` (default: all of the model's) names the towers to run: only their inputs
        are read and only their embeddings returned (e.g. text alone for queries, so no vision
        tower runs on placeholder frames). The fusion tokens need every modality of the condition;
        when one is not run, ``condition`` and ``condition_mask`` are None.
        """
        if modalities is None:
            run = self.modalities
        else:
            unknown = sorted(set(modalities) - set(self.modalities))
            if unknown or not modalities:
                raise ValueError(
                    f"encode: modalities={tuple(modalities)}; expected a non-empty subset of the "
                    f"model's {self.modalities}"
                )
            run = tuple(m for m in self.modalities if m in modalities)
        pooled: dict[str, Array] = {}
        tokens: dict[str, Array] = {}
        masks: dict[str, Array] = {}
        for m in run:
            if m in TEXT_LIKE:
                ids = _batch_get(batch, f"{m}_ids", 2)
                mask = _batch_get(batch, f"{m}_mask", 2)
                hidden = self.bert(ids, mask, train=train)
                pooled[m] = hidden[:, 0] if self.text_pool == "cls" else mean_pool(hidden, mask)
                tokens[m], masks[m] = hidden, mask.astype(jnp.int32)
            elif m in VISION_LIKE:
                frames = self.normalize_frames(_batch_get(batch, m, 5))
                out = self.vision(frames, train=train)
                pooled[m], tokens[m] = out.pooled, out.tokens
            else:
                out = self.audio(_batch_get(batch, m, 4), train=train)
                pooled[m], tokens[m] = out.pooled, out.tokens
        embeddings = {m: self.heads[m](pooled[m]) for m in run}
        condition_modalities = self.train_condition if train else self.eval_condition
        if not self.matching or any(m not in run for m in condition_modalities):
            return Encoded(embeddings, None, None)
        cond, cond_mask = [], []
        for m in condition_modalities:
            x = self.condition_tokens[m](tokens[m])
            cond.append(x)
            if m in masks and not self.attend_condition_padding:
                cond_mask.append(masks[m])
            else:  # the reference attends to every token (an all-ones encoder mask)
                cond_mask.append(jnp.ones(x.shape[:2], jnp.int32))
        condition = jnp.concatenate(cond, axis=1).astype(self.dtype)
        return Encoded(embeddings, condition, jnp.concatenate(cond_mask, axis=1))

    def match_logits(
        self,
        text_ids: Array,
        text_mask: Array,
        condition: Array,
        condition_mask: Array,
        *,
        train: bool,
    ) -> Array:
        """(ids int[B', L], mask [B', L], condition [B', N, H], mask [B', N]) -> float32[B', 2].

        The fusion BERT (self-attention over the caption, cross-attention to the condition) and
        the matching head on its CLS token; index 1 is the "matched" class.
        """
        if not self.matching:
            raise ValueError("match_logits: the model config has matching.enabled=False")
        hidden = self.bert(
            text_ids, text_mask, context=condition, context_mask=condition_mask, train=train
        )
        return self.match_head(hidden[:, 0])

    def temperature(self) -> Array:
        """The contrastive temperature tau, float32[] (``models.temperature.Temperature``)."""
        return self.contra_temperature()


def build_model(config: ml_collections.ConfigDict, seed: int | jax.Array) -> GramModel:
    """A GramModel for `seed` (call inside jit or `nnx.eval_shape`); flax's eager sharding is off
    because the trainer places every array itself (`gram_jax.parallel`)."""
    with nnx.use_eager_sharding(False):
        return GramModel(config, rngs=nnx.Rngs(seed))


def split_model(model: nnx.Module):
    """(graphdef, params pure dict, model_state pure dict)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def merge_model(graphdef, abstract_params, abstract_rest, params, model_state) -> nnx.Module:
    """Rebuilds the module from pure dicts (inside jit; the templates give the State structure)."""
    p = jax.tree.map(lambda x: x, abstract_params)
    r = jax.tree.map(lambda x: x, abstract_rest)
    nnx.replace_by_pure_dict(p, params)
    nnx.replace_by_pure_dict(r, model_state)
    return nnx.merge(graphdef, p, r)
