"""One switch for reproducing the released GRAM code: ``config.fidelity``.

Each row of docs/reproduction.md is a difference between the released code (ispamm/GRAM, b70c5c2)
and gram_jax. Every row has its own documented config key(s); ``config.fidelity`` sets all of
them at once:

- ``'released'``: every key takes the released code's behaviour (to reproduce a paper number or a
  released checkpoint's scores);
- ``'improved'``: every key takes gram_jax's own choice (fp32 Gram matrices, exact gathers, a
  clamped log-temperature, a structural weight-decay mask, ...);
- ``''`` (the default): the switch sets nothing; each key keeps the value the config gives it.

``config.fidelity_exceptions`` lists dotted keys (e.g. ``('loss.gather_mode',)``) that the switch
leaves as the config sets them, for ablations of one row under a fidelity.

``finalize_config(config)`` applies the switch and then the rules that derive keys from others
(row 2: the subtitle modality from the dataset's annotation; row 4: the frame-embedding table from
the training frame count). gram-train and gram-eval call it before validating the config. The
table below is the only place that maps rows to keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import ml_collections

from data_pipelines.datasets import get_layout
from gram_jax.config.protocol import apply_protocol
from gram_jax.config.validation import ConfigError

FIDELITIES = ("", "released", "improved")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One config key (dotted path) and its value under each fidelity."""

    key: str
    released: Any
    improved: Any


@dataclasses.dataclass(frozen=True)
class Row:
    """A difference from the released code (docs/reproduction.md) and the keys that select it."""

    number: int
    difference: str
    settings: tuple[Setting, ...]
    owner: str  # the modules that implement the row's behaviour


# BEATs_iter3_plus_AS2M's checkpoint cfg, which the released code trains the audio tower with.
RELEASED_BEATS = dict(dropout=0.0, attention_dropout=0.0, layerdrop=0.05, grad_scale=0.6)

ROWS: tuple[Row, ...] = (
    Row(
        1,
        "empty subtitles are encoded as [CLS][SEP] and enter the Gram matrix",
        (Setting("data.empty_text_policy", "encode", "absent"),),
        "data_pipelines.transforms.LoadSample",
    ),
    Row(
        2,
        "a 4-modality volume whenever the annotation has a subtitle field",
        (Setting("model.subtitle_if_annotated", True, False),),
        "gram_jax.config.fidelity.add_annotated_subtitles",
    ),
    Row(
        3,
        "matching re-rank condition from the evaluated modalities; padding attended",
        (
            Setting("model.matching.eval_condition", "data", "train"),
            Setting("model.matching.condition_padding", "attend", "mask"),
        ),
        "gram_jax.models.gram",
    ),
    Row(
        4,
        "frame-embedding table sized to the training frames, nearest-expanded at test",
        # Both fidelities fix the stale rows: the released sizing is the right one.
        (Setting("model.vision.frame_table", "train_frames", "train_frames"),),
        "gram_jax.config.fidelity.size_frame_tables, gram_jax.models.heads.ConditionTokens",
    ),
    Row(
        5,
        "DiDeMo audio is <id>.mp3",
        # Fixed for both: the layout reads <id>.mp3 as released. data.audio_prefix='audio_' (no
        # fidelity) reads audio extracted under the older upstream name audio_<id>.mp3.
        (),
        "data_pipelines.datasets.didemo",
    ),
    Row(
        6,
        "frames resized by torchvision 0.15 float bilinear without antialias",
        (Setting("data.frame_transform", "released", "antialias"),),
        "data_pipelines.media.video, data_pipelines.media.frame_resize",
    ),
    Row(
        7,
        "evaluation in float32",
        (Setting("model.eval_dtype", "float32", ""),),
        "gram_jax.evaluators.model.EvalModel",
    ),
    Row(
        8,
        "audio decoded by librosa; padding max(T*n - L, T - L % T)",
        # The decoder (librosa vs PyAV) has no key: docs/reproduction.md measures the gap.
        (Setting("data.audio.padding", "reference", "fixed"),),
        "data_pipelines.media.audio",
    ),
    Row(
        9,
        "detached gathers, raw tau divisor (decayed), decay mask by name, BEATs cfg settings",
        (
            Setting("loss.gather_mode", "reference", "global"),
            Setting("model.temperature.parametrization", "reference", "log"),
            Setting("optim.decay_mask", "released_names", "structural"),
            Setting("model.audio.dropout_rate", RELEASED_BEATS["dropout"], 0.1),
            Setting("model.audio.attn_dropout_rate", RELEASED_BEATS["attention_dropout"], 0.1),
            Setting("model.audio.layerdrop", RELEASED_BEATS["layerdrop"], 0.0),
            Setting("model.audio.layer_grad_scale", RELEASED_BEATS["grad_scale"], 1.0),
        ),
        "gram_jax.losses, gram_jax.models.temperature, gram_jax.optim, gram_jax.models.audio",
    ),
    Row(
        10,
        "steps from the records kept; best test checkpoint kept",
        # Per-run keys, not fidelity settings: the epochs and the selection metric depend on the
        # dataset and its evaluator. config.num_epochs derives the steps from the records kept;
        # config.best_metric (+ best_mode) keeps the best-by-eval state in W/best apart from the
        # final one (docs/reproduction.md, row 10).
        (),
        "gram_jax.train (row owner: trainer)",
    ),
    Row(
        11,
        "classification ranks videos per class, then re-ranks",
        # A key of each classification evaluator (evals.<name>.protocol = 'per_class',
        # rerank_top_k = 50), not of the config: it needs records captioned with their class name.
        (),
        "gram_jax.evaluators.classification, experiments/paper/classify_tva.py",
    ),
    Row(
        12,
        "records without a readable <id>.mp3 dropped from training and test (MSR-VTT 884 of 1,000)",
        # One per-run key, config.protocol ('released_audio_filtered' | 'standard_1ka'), not a
        # fidelity setting: it decides which test set a number is on, so the paper configs name it.
        (),
        "gram_jax.config.protocol, data_pipelines.samples (filter_audio)",
    ),
)


def settings(fidelity: str) -> dict[str, Any]:
    """{dotted key: value} that ``fidelity`` ('released' or 'improved') sets, over every row."""
    if fidelity not in ("released", "improved"):
        raise ConfigError(f"fidelity {fidelity!r}: expected 'released' or 'improved'")
    out = {}
    for row in ROWS:
        for s in row.settings:
            if s.key in out:
                raise ConfigError(f"fidelity rows set {s.key!r} twice")
            out[s.key] = getattr(s, fidelity)
    return out


def _lookup(config, key: str):
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part not in node:
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"fidelity: config has no key {where!r} (needed by the fidelity table)"
            )
        if i < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def apply_fidelity(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets every row's key for ``config.fidelity`` (in place; returns ``config``).

    Keys listed in ``config.fidelity_exceptions`` are left alone. ``fidelity=''`` sets nothing.
    Raises ValueError for an unknown fidelity or exception key.
    """
    fidelity = config.get("fidelity", "")
    if fidelity not in FIDELITIES:
        raise ConfigError(f"config.fidelity={fidelity!r}: expected one of {FIDELITIES}")
    exceptions = tuple(config.get("fidelity_exceptions", ()))
    if not fidelity:
        return config
    values = settings(fidelity)
    unknown = [k for k in exceptions if k not in values]
    if unknown:
        raise ConfigError(
            f"config.fidelity_exceptions: {unknown} are not keys of the fidelity table; "
            f"expected some of {sorted(values)}"
        )
    for key, value in values.items():
        if key in exceptions:
            continue
        node, leaf = _lookup(config, key)
        node[leaf] = value
    return config


def _has_subtitles(dataset: str) -> bool:
    try:
        return bool(get_layout(dataset).has_subtitles)
    except (ValueError, ImportError):
        return False  # no layout (e.g. a custom or synthetic dataset): no annotation to read


def _with(modalities: Iterable[str], extra: str, before: str | None = None) -> tuple[str, ...]:
    out = list(modalities)
    if extra not in out:
        out.insert(out.index(before) if before in out else len(out), extra)
    return tuple(out)


def add_annotated_subtitles(config: ml_collections.ConfigDict) -> None:
    """Row 2: with ``model.subtitle_if_annotated``, 'subtitle' joins the modalities of the model
    and the data when the training dataset's records carry subtitles, and the tuple of each
    retrieval evaluator whose dataset does (the released code picks its volume from the data)."""
    if not config.model.get("subtitle_if_annotated", False) or "data" not in config:
        return
    train_subs = _has_subtitles(config.data.dataset)
    if train_subs:
        config.model.modalities = _with(config.model.modalities, "subtitle", before="depth")
        config.data.modalities = _with(config.data.modalities, "subtitle", before="text")
    for ev in (config.get("evals") or {}).values():
        if ev.get("type") != "retrieval":
            continue
        ev_data = ev.get("data") or {}
        dataset = ev_data.get("dataset", config.data.dataset)
        if not _has_subtitles(dataset):
            continue
        if "subtitle" not in config.model.modalities:
            raise ConfigError(
                f"model.subtitle_if_annotated: evaluator dataset {dataset!r} has subtitles but "
                f"the training data {config.data.dataset!r} has none, so the model has no "
                "subtitle tower to score them with"
            )
        if ev.get("modalities"):
            ev.modalities = _with(ev.modalities, "subtitle")
        if ev_data and "modalities" in ev_data:
            ev.data.modalities = _with(ev.data.modalities, "subtitle", before="text")


def size_frame_tables(config: ml_collections.ConfigDict) -> None:
    """Row 4: with ``model.vision.frame_table='train_frames'``, the fusion frame (clip) embedding
    has one row per training frame (clip); evaluation with more frames nearest-expands it."""
    table = config.model.vision.get("frame_table", "max_frames")
    if table not in ("train_frames", "max_frames"):
        raise ConfigError(
            f"config.model.vision.frame_table={table!r}: expected 'train_frames' or 'max_frames'"
        )
    if table != "train_frames" or "data" not in config:
        return
    config.model.vision.max_frames = int(config.data.num_frames)
    config.model.audio.max_clips = int(config.data.audio.num_clips)


def finalize_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fidelity switch, the protocol (gram_jax.config.protocol), then the rules that derive
    keys (rows 2 and 4). In place; returns it."""
    apply_fidelity(config)
    apply_protocol(config)
    if "model" in config:
        add_annotated_subtitles(config)
        size_frame_tables(config)
    return config
