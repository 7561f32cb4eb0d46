"""ActivityNet Captions layout: paragraph captions (70 tokens), two audio slices.

Reference config ``finetune_cfg/retrieval-activitynet.json``: 8 frames, 2 audio slices, plain
resize, ``max_caption_len`` 70. The released loader keeps a record only if ``<id>.mp3`` exists
and the record has a ``desc``.
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="activitynet",
    annotations={"train": "descs_ret_train.json", "test": "descs_ret_test.json"},
    required_fields=("video_id", "desc"),
    max_caption_len=70,
    train_frames=8,
    test_frames=8,
    audio_clips=2,
    resize="resize",
    reference_requires=("audio",),
)
