"""One split of a dataset as a flat, random-access list of samples, plus the raw media reader.

A *record* is one annotation entry (one video / audio clip); a *sample* is one (record, caption)
pair: ``caption_mode='all'`` gives every caption of a record its own sample, ``'first'`` only
caption 0 (annotations.load_records applies the mode). The pipeline's plans index samples.

``SplitData`` is pickled into Grain's worker processes, so it holds plain lists and numpy arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections
import numpy as np
from absl import logging

from data_pipelines import annotations, media, prepared_source
from data_pipelines.datasets import DatasetLayout, get_layout
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video


@dataclasses.dataclass
class SplitData:
    """The samples of one split.

    Attributes:
      split, dataset, annotation_path: where it came from.
      ids: str per record (the annotation id; the media file stem follows the dataset layout).
      positions: int32[R], each record's position in the annotation file (the batch's ``index``;
        stays the annotation position when ``filter_audio`` removes records).
      captions: list[str] per record (may be empty: then the text modality is absent).
      subtitles: str or None per record.
      labels: int32[R] class per record, bool[R, C] multi-hot when records list several classes
        (``label: [ids]``, AudioSet), or None when the dataset has no labels.
      sample_record: int32[N] record of each sample; sample_caption: int32[N] its caption.
      media_paths: modality -> list of str paths or None (file not found) per record.
      media_dirs: modality -> the directory searched.
      audio_prefix: the data config's ``audio_prefix`` (None = the layout's), for messages.
    """

    split: str
    dataset: str
    annotation_path: str
    ids: list[str]
    positions: np.ndarray
    captions: list[list[str]]
    subtitles: list[str | None]
    labels: np.ndarray | None
    sample_record: np.ndarray
    sample_caption: np.ndarray
    media_paths: dict[str, list[str | None]]
    media_dirs: dict[str, str]
    audio_prefix: str | None = None

    def __len__(self) -> int:
        return int(self.sample_record.shape[0])

    @property
    def num_records(self) -> int:
        return len(self.ids)


_EXTENSIONS = {"video": media.VIDEO_EXTENSIONS, "audio": media.AUDIO_EXTENSIONS}


def _layout(dataset: str | None, audio_prefix: str | None = None):
    """The DatasetLayout of ``dataset`` (audio prefix replaced when ``audio_prefix`` is not None),
    or None (plain ``<id>.<ext>`` naming) when neither is set."""
    if dataset:
        return get_layout(dataset, audio_prefix=audio_prefix)
    if audio_prefix:
        return DatasetLayout(name="", annotations={}, audio_prefix=audio_prefix)
    return None


def media_stem(
    dataset: str | None, record_id: str, modality: str, *, audio_prefix: str | None = None
) -> str:
    """File stem of ``record_id``'s ``modality`` file under ``dataset``'s naming.

    The layout maps ids to file names (AudioCaps ``<id up to the first dot>``; an
    ``audio_prefix`` such as DiDeMo's older ``audio_``); without either the stem is the id itself.
    """
    layout = _layout(dataset, audio_prefix)
    return str(record_id) if layout is None else layout.stem(str(record_id), modality)


def media_extensions(dataset: str | None, modality: str) -> tuple[str, ...]:
    """Extensions tried in order for ``modality`` files of ``dataset`` (its layout's, else all)."""
    layout = _layout(dataset)
    return _EXTENSIONS[modality] if layout is None else layout.extensions(modality)


def find_record_media(
    dataset: str | None,
    record_id: str,
    modality: str,
    directory: str | os.PathLike,
    *,
    audio_prefix: str | None = None,
) -> str | None:
    """Path of ``record_id``'s ``modality`` ('video' | 'audio') file in ``directory``, or None.

    With ``dataset`` set, the lookup goes through ``datasets.get_layout(dataset).find`` (file
    naming and extensions of that dataset); with None, the stem is the id. ``audio_prefix`` (the
    data config key; None = the layout's) is prepended to audio stems. All match the stem
    exactly (``video1`` never finds ``video10.mp4``). Raises media.MediaError when ``directory``
    does not exist.
    """
    if modality not in _EXTENSIONS:
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
    layout = _layout(dataset, audio_prefix)
    if layout is None:
        found = media.find_media(directory, str(record_id), _EXTENSIONS[modality])
    else:
        found = layout.find(str(record_id), modality, directory)
    return None if found is None else os.fspath(found)


def _record_label(record, path: str, position: int) -> int | list[int] | None:
    """The record's ``label``: an int class id, a list of class ids (multi-label), or None."""
    label = (record.extra or {}).get("label")
    if label is None:
        return None

    def is_id(value) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0

    if is_id(label):
        return int(label)
    if isinstance(label, list) and label and all(is_id(v) for v in label):
        return sorted({int(v) for v in label})
    raise ValueError(
        f"{path}: record {position} (id {record.id!r}) field 'label': expected a class index "
        f"(int >= 0) or a non-empty list of them (multi-label), got {label!r}"
    )


def _label_array(labels: list, num_classes: int | None, path: str) -> np.ndarray:
    """int32[R] class ids, or bool[R, C] multi-hot when any record lists several classes."""
    multi = any(isinstance(label, list) for label in labels)
    ids = [label if isinstance(label, list) else [label] for label in labels]
    largest = max(max(i) for i in ids)
    classes = largest + 1 if num_classes is None else int(num_classes)
    if largest >= classes:
        raise ValueError(
            f"{path}: field 'label' holds class {largest}, but data config key 'num_classes' is "
            f"{num_classes} (class ids must be < num_classes)"
        )
    if not multi:
        return np.asarray(labels, np.int32)
    hot = np.zeros((len(labels), classes), bool)
    for row, classes_of_row in enumerate(ids):
        hot[row, classes_of_row] = True
    return hot


def load_split(config: ml_collections.ConfigDict, split: str) -> SplitData:
    """Reads the annotations of ``split`` and resolves its media files (exact stem match).

    Media names follow ``config.dataset``'s layout (:func:`find_record_media`), both for the
    files read and for the ``filter_audio`` availability filter.

    Raises:
      KeyError: ``config.annotations`` has no path for ``split``.
      media.MediaError: under ``bad_data='raise'``, a configured modality's file is missing
        for some record (the message names the first ones and the count); a media dir is missing.
    """
    path = config.annotations.get(split) if split in config.annotations else None
    if path is None:
        raise KeyError(
            f"data config key 'annotations.{split}': no annotation file for split {split!r}; "
            f"configured splits: {sorted(k for k, v in config.annotations.items() if v)}"
        )
    path = os.fspath(path)
    records = annotations.load_records(
        path,
        dataset=config.dataset,
        caption_mode=config.caption_mode,
        repeated_ids=config.repeated_ids,
    )
    positions = np.arange(len(records), dtype=np.int32)
    prefix = config.audio_prefix
    if config.prepared_dir is not None:
        # The prepared shards hold the media; the original files need not exist here.
        manifest = prepared_source.read_manifest(config.prepared_dir, split)
        prepared_source.check_manifest_matches(manifest, records, config, path)
        unavailable = set(manifest["missing"].get("audio", []))
    else:
        manifest = None
    if config.filter_audio:
        if manifest is None:
            if not config.audio_dir:
                raise ValueError("data config: filter_audio=True needs audio_dir")
            unavailable, unreadable = _without_readable_audio(config, records, prefix)
        else:
            unreadable = {}
        keep = [i for i, r in enumerate(records) if r.id not in unavailable]
        logging.info(
            "%s: filter_audio kept %d of %d records (%d without an audio file, %d whose audio "
            "file has no readable audio stream%s)",
            path,
            len(keep),
            len(records),
            len(unavailable) - len(unreadable),
            len(unreadable),
            f": first {dict(list(unreadable.items())[:3])}" if unreadable else "",
        )
        records = [records[i] for i in keep]
        positions = positions[keep]
    media_paths: dict[str, list[str | None]] = {}
    media_dirs: dict[str, str] = {}
    for m in [m for m in ("video", "audio") if m in config.modalities and manifest is None]:
        directory = config[f"{m}_dir"]
        if not directory:
            raise ValueError(f"data config key '{m}_dir': needed because modalities has {m!r}")
        found = [
            find_record_media(config.dataset, r.id, m, directory, audio_prefix=prefix)
            for r in records
        ]
        media_paths[m] = found
        media_dirs[m] = os.fspath(directory)
        missing = [r.id for r, p in zip(records, found, strict=True) if p is None]
        if missing:
            stems = [media_stem(config.dataset, i, m, audio_prefix=prefix) for i in missing[:5]]
            message = (
                f"{path}: {len(missing)} of {len(records)} records have no {m} file in {directory} "
                f"(first ids: {missing[:5]}; file stems looked for: {stems}; extensions "
                f"{media_extensions(config.dataset, m)})"
            )
            if config.bad_data == "raise":
                raise media.MediaError(directory, message + "; set bad_data='skip' to mask them")
            logging.warning("%s; they get present_%s=False", message, m)
    labels = [_record_label(r, path, int(p)) for r, p in zip(records, positions, strict=True)]
    has_label = [label is not None for label in labels]
    if any(has_label) and not all(has_label):
        first = has_label.index(False)
        raise ValueError(
            f"{path}: record {int(positions[first])} (id {records[first].id!r}) has no 'label' "
            "while other records do; a labelled dataset needs one on every record"
        )
    sample_record, sample_caption = [], []
    for i, r in enumerate(records):
        n = max(1, len(r.captions))  # a record without caption still yields one sample
        sample_record.extend([i] * n)
        sample_caption.extend(range(n))
    return SplitData(
        split=split,
        dataset=config.dataset,
        annotation_path=path,
        ids=[str(r.id) for r in records],
        positions=positions,
        captions=[list(r.captions) for r in records],
        subtitles=[r.subtitle for r in records],
        labels=(
            _label_array(labels, config.num_classes, path) if all(has_label) and labels else None
        ),
        sample_record=np.asarray(sample_record, np.int32),
        sample_caption=np.asarray(sample_caption, np.int32),
        media_paths=media_paths,
        media_dirs=media_dirs,
        audio_prefix=prefix,
    )


def _without_readable_audio(config, records, prefix) -> tuple[set[str], dict[str, str]]:
    """(ids to drop, {id: reason} of those whose audio file exists but cannot be read).

    The released code keeps a record when ``<id>.mp3`` exists; a file that exists but has no
    audio stream (or does not open) would then fail in training, so it is dropped too and counted
    apart (``media.audio.probe_audio``: one packet decoded per file).
    """
    dropped: set[str] = set()
    unreadable: dict[str, str] = {}
    for r in records:
        if r.id in dropped:
            continue
        found = find_record_media(
            config.dataset, r.id, "audio", config.audio_dir, audio_prefix=prefix
        )
        if found is None:
            dropped.add(r.id)
            continue
        stat = os.stat(found)
        reason = _probe_reason(os.fspath(found), stat.st_mtime_ns, stat.st_size)
        if reason is not None:
            dropped.add(r.id)
            unreadable[r.id] = reason
    return dropped, unreadable


@functools.lru_cache(maxsize=1 << 20)
def _probe_reason(path: str, mtime_ns: int, size: int) -> str | None:
    """Why ``path`` has no readable audio, or None; cached per file version, because every
    dataset built from a split (run length, training, each evaluation) filters again."""
    del mtime_ns, size  # cache key only: a replaced file is probed again
    try:
        media_audio.probe_audio(path)
    except media.MediaError as err:
        return err.reason
    return None


class RawReader:
    """Decodes a record's media from the original files (PyAV), per the config.

    ``video``/``audio`` raise media.MediaError for a missing or undecodable file; the caller
    (transforms.LoadSample) applies the bad-data policy.
    """

    def __init__(self, split: SplitData, config: ml_collections.ConfigDict, *, train: bool):
        self._split = split
        self._train = train
        self._num_frames = (
            config.num_frames if train else (config.eval_num_frames or config.num_frames)
        )
        self._image_size = config.image_size
        self._resize = config.resize
        self._frame_transform = config.frame_transform
        self._audio = config.audio.to_dict()

    def _path(self, modality: str, record: int) -> str:
        path = self._split.media_paths[modality][record]
        if path is None:
            dataset = self._split.dataset
            stem = media_stem(
                dataset, self._split.ids[record], modality, audio_prefix=self._split.audio_prefix
            )
            raise media.MediaError(
                os.path.join(self._split.media_dirs[modality], stem),
                f"no {modality} file with this stem (extensions "
                f"{media_extensions(dataset, modality)})",
            )
        return path

    def video(self, record: int, rng: np.random.Generator | None) -> np.ndarray:
        """uint8[F, S, S, 3] frames of ``record``."""
        return media_video.load_frames(
            self._path("video", record),
            num_frames=self._num_frames,
            train=self._train,
            rng=rng,
            size=self._image_size,
            resize=self._resize,
            transform=self._frame_transform,
        )

    def audio(self, record: int, rng: np.random.Generator | None) -> np.ndarray:
        """float32[C, T, M] normalised filterbank slices of ``record``."""
        a = self._audio
        return media_audio.load_fbank_slices(
            self._path("audio", record),
            num_clips=a["num_clips"],
            target_length=a["target_length"],
            mel_bins=a["mel_bins"],
            train=self._train,
            rng=rng,
            mean=a["norm_mean"],
            std=a["norm_std"],
            padding=a["padding"],
            backend=a["backend"],
        )
