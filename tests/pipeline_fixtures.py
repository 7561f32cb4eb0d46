"""The four real reference clips (data_pipelines/reference_data) as a tiny dataset in a tmp dir.

The annotation JSON is written into the test's tmp_path with the captions of the media README
(clip i <-> caption i). Videos are read in place; the audio files are named audio<i>.mp3 there, so
tmp_path/audios holds symbolic links named by the video ids (nothing is copied).
"""

from __future__ import annotations

import pathlib

from data_pipelines.config import data_config
from data_pipelines.reference_media import write_clip_dataset


def clip_dataset(tmp_path: pathlib.Path, *, second_captions=True) -> dict:
    """Writes ann.json (+ audio links) into ``tmp_path``; returns data_config overrides for it.

    ``second_captions`` gives every record a second caption (a paraphrase), so caption_mode='all'
    has 8 samples and 'first' has 4.
    """
    return write_clip_dataset(tmp_path, second_captions=second_captions)


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
