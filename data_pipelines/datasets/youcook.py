"""YouCook2 layout: one caption per clip plus subtitles.

Reference config ``finetune_cfg/retrieval-youcook.json``: 8 frames, one audio slice, plain resize,
captions of 40 tokens, subtitles of 70; annotation files are named ``descs_cap_*.json``.
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="youcook",
    annotations={"train": "descs_cap_train.json", "test": "descs_cap_test.json"},
    required_fields=("video_id", "desc"),
    max_caption_len=40,
    max_subtitle_len=70,
    train_frames=8,
    test_frames=8,
    audio_clips=1,
    resize="resize",
    has_subtitles=True,
    reference_requires=("audio",),
)
