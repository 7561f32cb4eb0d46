"""Reads `gram-data prepare` output (ArrayRecord shards of a TFDS builder) into the pipeline.

Layout of ``<prepared_dir>/<split>/`` (written by data_pipelines.prepare):
    manifest.json                     counts, shapes, spec, per-part checksums, missing/bad ids
    part-00000/DONE.json              completion marker of one part (resumable preparation)
    part-00000/gram_prepared_part/1.0.0/*.array_record-*   one TFDS dataset per part

Part ``k`` holds the records ``[start_k, stop_k)`` of the annotation file, in order, one example
per record: ``index`` (annotation position), ``id``, ``video`` uint8[F, S, S, 3] (evaluation-mode
frames: segment middles, centre crop; or F JPEG byte strings with ``--frame-format jpeg``),
``audio`` float32[K, T, M] (all K normalised filterbank slices), ``present_<m>`` and
``error_<m>`` (why a modality is missing).

What differs from the raw path in training: frames are the stored segment middles (the raw path
draws a random frame per segment), and ``crop_flip`` crops inside the stored centre square (the
raw path crops anywhere in the frame). Audio slices are drawn exactly as in the raw path.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import threading

import ml_collections
import numpy as np
from etils import epath
from PIL import Image

from data_pipelines.media import MediaError
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video
from gram_jax.train import workdir as workdir_paths

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
BUILDER_NAME = "gram_prepared_part"
SPLIT_NAME = "data"
#: How frames are stored: raw uint8 arrays or one JPEG per frame.
FRAME_FORMATS = ("uint8", "jpeg")
#: Config keys the prepared arrays depend on; reading with other values would silently differ.
SPEC_KEYS = (
    "image_size",
    "resize",
    "mel_bins",
    "target_length",
    "norm_mean",
    "norm_std",
    "padding",
    "backend",
)


is_remote = workdir_paths.is_remote  # the reader takes gs://, the writer (prepare.py) refuses it


def split_dir(prepared_dir: str | os.PathLike, split: str) -> epath.Path:
    """``<prepared_dir>/<split>``: a local folder or a ``gs://`` URI, as the run's workdir (one
    path type, `gram_jax.train.workdir`; pathlib would make ``gs://b/p`` the local ``gs:/b/p``)."""
    return workdir_paths.resolve(prepared_dir) / split


def ids_digest(ids) -> str:
    """sha256 of the record ids in order (ties a prepared split to its annotation file)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\n")
    return h.hexdigest()


def read_manifest(prepared_dir: str | os.PathLike, split: str) -> dict:
    """The manifest of a complete prepared split; raises FileNotFoundError naming the path."""
    path = split_dir(prepared_dir, split) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest; run `gram-data prepare` for split {split!r} first (a manifest "
            "is written only when every part is complete)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: key 'format_version': expected {FORMAT_VERSION}, "
            f"got {manifest.get('format_version')!r}; prepare the split again"
        )
    return manifest


def config_spec(config: ml_collections.ConfigDict) -> dict:
    """The SPEC_KEYS values of a data config."""
    a = config.audio
    return {
        "image_size": int(config.image_size),
        "resize": str(config.resize),
        "mel_bins": int(a.mel_bins),
        "target_length": int(a.target_length),
        "norm_mean": float(a.norm_mean),
        "norm_std": float(a.norm_std),
        "padding": str(a.padding),
        "backend": str(a.backend),
    }


def check_manifest_matches(manifest: dict, records, config, annotation_path: str) -> None:
    """Raises ValueError when the prepared split was made from other records or settings."""
    where = f"{config.prepared_dir}/{manifest['split']}/{MANIFEST}"
    if manifest["num_records"] != len(records) or manifest["ids_sha256"] != ids_digest(
        r.id for r in records
    ):
        raise ValueError(
            f"{where}: prepared from {manifest['annotation_path']} ({manifest['num_records']} "
            f"records) but {annotation_path} has {len(records)} records with other ids; prepare "
            "again for this annotation file"
        )
    spec = config_spec(config)
    for key in SPEC_KEYS:
        if manifest["spec"][key] != spec[key]:
            raise ValueError(
                f"{where}: key 'spec.{key}' is {manifest['spec'][key]!r} but the data config has "
                f"{spec[key]!r}; prepare again with the config's value"
            )
    frames = max(config.num_frames, config.eval_num_frames or config.num_frames)
    if frames > manifest["spec"]["num_frames"]:
        raise ValueError(
            f"{where}: key 'spec.num_frames' is {manifest['spec']['num_frames']}, fewer than the "
            f"{frames} frames the data config asks for"
        )
    if spec["padding"] == "reference" and manifest["spec"]["num_clips"] != config.audio.num_clips:
        # The reference's padding length depends on the number of clips.
        raise ValueError(
            f"{where}: key 'spec.num_clips' is {manifest['spec']['num_clips']} but the data config "
            f"has audio.num_clips={config.audio.num_clips} with padding='reference'"
        )
    for m in ("video", "audio"):
        if m in config.modalities and m not in manifest["spec"]["modalities"]:
            raise ValueError(f"{where}: modality {m!r} was not prepared (key 'spec.modalities')")


def open_part(part_dir: epath.Path):
    """tfds data source (random access, numpy, no TensorFlow) of one complete part."""
    import tensorflow_datasets as tfds  # 3.6 s to import: only the prepared path pays it

    builder = tfds.builder_from_directory(os.fspath(part_dir / BUILDER_NAME / "1.0.0"))
    return builder.as_data_source(split=SPLIT_NAME)


def random_square_crop(frames: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8[F, S', S', 3] -> uint8[F, size, size, 3]: one square crop of 80-100 % of the area
    (RandomResizedCrop with ratio 1, as media.video) and a horizontal flip with p=0.5, the same for
    every frame of the clip."""
    side_in = frames.shape[1]
    scale = rng.uniform(0.8, 1.0)
    side = max(1, min(side_in, int(round(np.sqrt(scale) * side_in))))
    top = int(rng.integers(0, side_in - side + 1))
    left = int(rng.integers(0, side_in - side + 1))
    flip = bool(rng.random() < 0.5)
    out = np.empty((frames.shape[0], size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        region = frame[top : top + side, left : left + side]
        if side != size:
            region = np.asarray(Image.fromarray(region).resize((size, size), Image.BILINEAR))
        out[i] = region[:, ::-1] if flip else region
    return out


class PreparedReader:
    """Same interface as samples.RawReader, reading a prepared split (see the module docstring)."""

    def __init__(self, split, config: ml_collections.ConfigDict, *, train: bool):
        self._split = split
        self._train = train
        self._num_frames = (
            config.num_frames if train else (config.eval_num_frames or config.num_frames)
        )
        self._image_size = int(config.image_size)
        self._resize = config.resize
        self._num_clips = int(config.audio.num_clips)
        self._dir = split_dir(config.prepared_dir, split.split)
        self._manifest = read_manifest(config.prepared_dir, split.split)
        parts = self._manifest["parts"]
        self._starts = [p["start"] for p in parts]
        self._sources = [open_part(self._dir / p["dir"]) for p in parts]
        self._stored_frames = self._manifest["spec"]["num_frames"]
        # video() and audio() of one sample come from one example: keep the last one per thread.
        self._last = threading.local()

    def _example(self, record: int) -> dict:
        if getattr(self._last, "record", None) == record:
            return self._last.example
        position = int(self._split.positions[record])
        part = bisect.bisect_right(self._starts, position) - 1
        example = self._sources[part][position - self._starts[part]]
        if int(example["index"]) != position:
            raise ValueError(
                f"{self._dir}: part {part} row {position - self._starts[part]} holds record "
                f"{example['index']}, expected {position}; the prepared split is corrupt"
            )
        self._last.record, self._last.example = record, example
        return example

    def _check_present(self, example: dict, modality: str, record: int) -> None:
        if not bool(example[f"present_{modality}"]):
            error = example[f"error_{modality}"]
            error = error.decode() if isinstance(error, bytes) else str(error)
            raise MediaError(f"{self._dir} (id {self._split.ids[record]})", f"at prepare: {error}")

    def video(self, record: int, rng: np.random.Generator | None) -> np.ndarray:
        """uint8[F, S, S, 3]."""
        example = self._example(record)
        self._check_present(example, "video", record)
        frames = example["video"]
        if self._manifest["spec"].get("frame_format") == "jpeg":
            frames = np.stack(
                [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in frames]
            )
        if self._num_frames != self._stored_frames:
            chosen = media_video.sample_frame_indices(
                self._stored_frames, self._num_frames, train=self._train, rng=rng
            )
            frames = frames[chosen]
        if self._train and self._resize == "crop_flip":
            frames = random_square_crop(frames, rng, self._image_size)
        return frames

    def audio(self, record: int, rng: np.random.Generator | None) -> np.ndarray:
        """float32[C, T, M]."""
        example = self._example(record)
        self._check_present(example, "audio", record)
        slices = example["audio"]
        chosen = media_audio.slice_indices(
            slices.shape[0], self._num_clips, train=self._train, rng=rng
        )
        return slices[chosen]
