"""The four real clips of ../shared/data/gram_reference/media as a tiny dataset in a tmp dir.

The annotation JSON is written into the test's tmp_path with the captions of the media README
(clip i <-> caption i). Videos are read in place; the audio files are named audio<i>.mp3 there, so
tmp_path/audios holds symbolic links named by the video ids (nothing is copied).
"""

from __future__ import annotations

import json
import pathlib

from data_pipelines.config import data_config

CAPTIONS = [
    "A dog is barking",
    "A dog is howling",
    "A red cat is meowing",
    "A black cat is meowing",
]
IDS = [f"video{i}" for i in range(1, 5)]


def clip_dataset(
    tmp_path: pathlib.Path, shared_data: pathlib.Path, *, second_captions=True
) -> dict:
    """Writes ann.json (+ audio links); returns data_config overrides for it.

    ``second_captions`` gives every record a second caption (a paraphrase), so caption_mode='all'
    has 8 samples and 'first' has 4.
    """
    records = []
    for media_id, caption in zip(IDS, CAPTIONS, strict=True):
        captions = [caption, caption.replace(" is ", " keeps ")] if second_captions else caption
        records.append({"video_id": media_id, "desc": captions})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    audio_dir = tmp_path / "audios"
    audio_dir.mkdir(exist_ok=True)
    for i, media_id in enumerate(IDS, start=1):
        link = audio_dir / f"{media_id}.mp3"
        if not link.exists():
            link.symlink_to(shared_data / "media" / "audios" / f"audio{i}.mp3")
    return {
        "dataset": None,
        "annotations": {"train": str(ann), "test": str(ann)},
        "video_dir": str(shared_data / "media" / "videos"),
        "audio_dir": str(audio_dir),
    }


def small_config(layout: dict, **overrides):
    """A data config over ``layout`` with small shapes (2 frames of 32x32) for fast tests."""
    kwargs = dict(
        layout,
        modalities=("video", "audio", "text"),
        num_frames=2,
        image_size=32,
        batch_size=2,
        eval_batch_size=3,
        read_threads=2,
    )
    kwargs.update(overrides)
    return data_config(**kwargs)
