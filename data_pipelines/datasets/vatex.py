"""VATEX layout: 10 captions per video (the reference evaluates with the first only), subtitles.

Reference config ``finetune_cfg/retrieval-vatex.json``: 8 frames, one audio slice, plain resize,
captions of 40 tokens, subtitles of 70 (730 of the 1,500 test subtitles are empty).
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="vatex",
    annotations={"train": "descs_ret_train.json", "test": "descs_ret_test.json"},
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
