"""Dataset layouts: file names, media naming, text lengths and the protocol switches per dataset.

Each module ``data_pipelines.datasets.<name>`` defines ``LAYOUT`` (a :class:`DatasetLayout`); a
module that can build its dataset from raw sources also defines ``build_main(argv)`` (``gram-data
build``). The values follow the released configs (reference sections 3.3, 4.1-4.4).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
from collections.abc import Callable, Iterable

from data_pipelines.media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, find_media

LAYOUT_NAMES = (
    "msrvtt",
    "didemo",
    "activitynet",
    "vatex",
    "audiocaps",
    "youcook",
    "vast",
    "reference_clips",
)


def identity_stem(record_id: str) -> str:
    return record_id


def stem_before_first_dot(record_id: str) -> str:
    """AudioCaps media stem as in the reference: ``a_30.000_40.000`` -> ``a_30``."""
    return record_id.split(".")[0]


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """How one dataset is laid out on disk and evaluated.

    Attributes:
      name: layout name (module name).
      annotations: split -> annotation file name, relative to the annotation directory.
      video_dir, audio_dir: default media folders, relative to the dataset root.
      video_extensions, audio_extensions: tried in order for a media stem.
      video_prefix, audio_prefix: prepended to the stem (DiDeMo audio files are ``audio_<id>``).
      media_stem: record id -> stem before prefixes (module-level function, so it pickles).
      required_fields: JSON keys every record must have.
      max_caption_len, max_subtitle_len: BERT lengths incl. [CLS]/[SEP].
      train_frames, test_frames, audio_clips: samples per item (reference configs).
      resize: ``'crop_flip'`` or ``'resize'`` (video transform of the reference config).
      has_subtitles: records carry ``subtitle`` (the reference then uses a 4-modality volume).
      reference_requires: modalities whose file must exist for the reference to keep a record.
    """

    name: str
    annotations: dict[str, str]
    video_dir: str = "videos"
    audio_dir: str = "audios"
    video_extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    audio_extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    video_prefix: str = ""
    audio_prefix: str = ""
    media_stem: Callable[[str], str] = identity_stem
    required_fields: tuple[str, ...] = ()
    max_caption_len: int = 40
    max_subtitle_len: int = 70
    train_frames: int = 8
    test_frames: int = 8
    audio_clips: int = 1
    resize: str = "resize"
    has_subtitles: bool = False
    reference_requires: tuple[str, ...] = ("audio",)

    def stem(self, record_id: str, modality: str) -> str:
        """File stem of ``record_id``'s ``modality`` ('video' or 'audio') file."""
        base = self.media_stem(record_id)
        if modality == "video":
            return self.video_prefix + base
        if modality == "audio":
            return self.audio_prefix + base
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")

    def extensions(self, modality: str) -> tuple[str, ...]:
        return self.video_extensions if modality == "video" else self.audio_extensions

    def find(
        self, record_id: str, modality: str, directory: str | os.PathLike
    ) -> pathlib.Path | None:
        """The media file of ``record_id`` in ``directory`` by exact stem, or None."""
        return find_media(directory, self.stem(record_id, modality), self.extensions(modality))

    def annotation_path(self, annotation_dir: str | os.PathLike, split: str) -> pathlib.Path:
        if split not in self.annotations:
            raise KeyError(
                f"dataset {self.name!r} has no split {split!r}; splits: {sorted(self.annotations)}"
            )
        return pathlib.Path(annotation_dir) / self.annotations[split]

    def available_ids(
        self, record_ids: Iterable[str], modality: str, directory: str | os.PathLike
    ) -> frozenset[str]:
        """The ids among ``record_ids`` whose ``modality`` file exists in ``directory``."""
        return frozenset(r for r in record_ids if self.find(r, modality, directory) is not None)

    def protocol(self, name: str) -> dict:
        """Switches of a named protocol: ``'reference'`` (the released code) or ``'standard'``.

        Returns ``{'caption_mode': 'first'|'all', 'require': tuple of modalities}``: the reference
        keeps one caption per record and only records whose ``reference_requires`` files exist;
        the standard protocol keeps all captions and all records (missing media are masked).
        """
        if name == "reference":
            return {"caption_mode": "first", "require": self.reference_requires}
        if name == "standard":
            return {"caption_mode": "all", "require": ()}
        raise ValueError(f"protocol must be 'reference' or 'standard', got {name!r}")


def get_layout(name: str) -> DatasetLayout:
    """``data_pipelines.datasets.<name>.LAYOUT``; a clear error for unknown names."""
    module = load_dataset_module(name)
    layout = getattr(module, "LAYOUT", None)
    if not isinstance(layout, DatasetLayout):
        raise ValueError(f"data_pipelines.datasets.{name} defines no LAYOUT (a DatasetLayout)")
    return layout


def load_dataset_module(name: str):
    """Import ``data_pipelines.datasets.<name>``; ValueError naming the known layouts if absent."""
    if not name.isidentifier():
        raise ValueError(f"invalid dataset name {name!r}")
    try:
        return importlib.import_module(f"data_pipelines.datasets.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"data_pipelines.datasets.{name}":
            raise
        raise ValueError(
            f"unknown dataset {name!r}: no module data_pipelines.datasets.{name} "
            f"(layouts: {', '.join(LAYOUT_NAMES)})"
        ) from err


__all__ = ["LAYOUT_NAMES", "DatasetLayout", "get_layout", "load_dataset_module"]
