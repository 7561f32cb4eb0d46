"""The real reference data committed with the project, and the four clips as a tiny dataset.

``REFERENCE_DATA_DIR`` (``data_pipelines/reference_data``, MIT, from the released GRAM
repository; see its README.md and LICENSE) holds ``annotations/<dataset>/*.json`` and
``media/videos/video<i>.mp4`` + ``media/audios/audio<i>.mp3`` for i = 1..4. Tests, benchmarks
and ``runlocal`` configs read it from the clone itself, so nothing needs a sibling folder.

The released files name a clip's video and audio differently, so :func:`write_clip_dataset` writes
a VAST-style dataset over them into a folder the caller owns (a test's tmp dir, a run's workdir):
the annotation JSON plus audio links named by the video ids. Every file is written under a private
name and renamed into place, so a stale leftover or a concurrent writer of the same folder is
harmless.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid

REFERENCE_DATA_DIR = pathlib.Path(__file__).resolve().parent / "reference_data"
REFERENCE_MEDIA_DIR = REFERENCE_DATA_DIR / "media"
#: Captions of the four clips (``media/annotations.json``): clip i shows/sounds like caption i.
CLIP_CAPTIONS = tuple(
    r["desc"] for r in json.loads((REFERENCE_MEDIA_DIR / "annotations.json").read_text())
)
#: Record ids of the clip dataset: the video file stems.
CLIP_IDS = tuple(f"video{i}" for i in range(1, len(CLIP_CAPTIONS) + 1))


def _replace_with(path: pathlib.Path, write) -> None:
    """Create ``path`` through ``write(private_path)`` and an atomic rename over what is there."""
    private = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write(private)
    os.replace(private, path)


def write_clip_dataset(root: str | os.PathLike, *, second_captions: bool = False) -> dict:
    """Writes ``root/ann.json`` and ``root/audios/video<i>.mp3`` links; returns config overrides.

    Args:
      root: a folder the caller owns (created if absent).
      second_captions: give every record a second caption (a paraphrase, "is" -> "keeps"), so
        ``caption_mode='all'`` yields 8 samples and ``'first'`` 4.

    Returns:
      ``{"dataset": None, "annotations": {"train", "test": ann.json}, "video_dir", "audio_dir"}``;
      videos are read in place from ``REFERENCE_MEDIA_DIR``.
    """
    media = REFERENCE_MEDIA_DIR
    if not (media / "videos").is_dir():
        raise FileNotFoundError(f"the committed reference clips are missing: {media}/videos")
    root = pathlib.Path(root)
    audio_dir = root / "audios"
    audio_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (media_id, caption) in enumerate(zip(CLIP_IDS, CLIP_CAPTIONS, strict=True), start=1):
        captions = [caption, caption.replace(" is ", " keeps ")] if second_captions else caption
        records.append({"video_id": media_id, "desc": captions})
        target = media / "audios" / f"audio{i}.mp3"
        _replace_with(audio_dir / f"{media_id}.mp3", lambda p, t=target: p.symlink_to(t))
    ann = root / "ann.json"
    _replace_with(ann, lambda p: p.write_text(json.dumps(records)))
    return {
        "dataset": None,
        "annotations": {"train": str(ann), "test": str(ann)},
        "video_dir": str(media / "videos"),
        "audio_dir": str(audio_dir),
    }
