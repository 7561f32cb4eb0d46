"""VAST-27M and its 150k subset (GRAM's "pretraining" set): ``clip_id``, ``vast_cap``, subtitles.

The 150k subset (``annotations150k.json``, distributed outside the repository) has ``clip_id``,
``vast_cap`` and, per the VAST-27M schema, ``subtitle``, ``vision_cap`` and ``audio_cap``; the full
VAST-27M records also carry ``url``, ``begin_s``/``end_s``, ``begin_t``/``end_t`` (kept in
``Record.extra``). Reference config ``finetune_cfg/pretrain-gram.json``: 2 training frames,
``crop_flip``, one audio slice; a record is kept only if ``<clip_id>.mp3`` and ``.mp4`` exist.
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="vast",
    annotations={"train": "annotations150k.json"},
    required_fields=("clip_id", "vast_cap"),
    max_caption_len=40,
    max_subtitle_len=70,
    train_frames=2,
    test_frames=8,
    audio_clips=1,
    resize="crop_flip",
    has_subtitles=True,
    reference_requires=("audio", "video"),
)
