"""AudioCaps layout: 5 captions per clip, ``.wav`` audio, media named ``<id up to the first dot>``.

Reference config ``finetune_cfg/retrieval-audiocaps.json``: 8 frames, one audio slice, plain resize.
The released loader rewrites ``GOD8Bt5LfDE_100.000_110.000`` to ``GOD8Bt5LfDE_100`` and keeps a
record only if both ``<stem>.wav`` and ``<stem>.mp4`` exist; it evaluates with the first of the 5
captions.
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout, stem_before_first_dot

LAYOUT = DatasetLayout(
    name="audiocaps",
    annotations={"train": "descs_ret_trainval.json", "test": "descs_ret_test.json"},
    audio_extensions=(".wav", ".flac", ".mp3", ".m4a", ".ogg"),
    media_stem=stem_before_first_dot,
    required_fields=("video_id", "caption"),
    max_caption_len=40,
    train_frames=8,
    test_frames=8,
    audio_clips=1,
    resize="resize",
    reference_requires=("audio", "video"),
)
