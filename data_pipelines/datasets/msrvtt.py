"""MSR-VTT layout: 1k-A test split, subtitles, and the reference's 884-video audio filter.

Reference config ``finetune_cfg/retrieval-msrvtt.json``: 4 training frames, 8 test frames, one audio
slice, ``crop_flip``, captions of at most 40 tokens, subtitles of 70. The released loader keeps only
videos whose ``<id>.mp3`` exists, so its test set has 884 of the 1,000 videos (issue #1); the
annotation file ``descs_ret_test_audcap_with_audio_captions.json`` marks exactly those videos
with an ``audio_caption``, so the filter can be reproduced without the media.
"""

from __future__ import annotations

import os

from data_pipelines.datasets import DatasetLayout
from data_pipelines.records import read_records

LAYOUT = DatasetLayout(
    name="msrvtt",
    annotations={
        "train": "descs_ret_train.json",
        "train_unique": "unique_descs_ret_train.json",
        "test": "descs_ret_test.json",
        "test_audio_captions": "descs_ret_test_audcap_with_audio_captions.json",
    },
    required_fields=("video_id", "desc"),
    max_caption_len=40,
    max_subtitle_len=70,
    train_frames=4,
    test_frames=8,
    audio_clips=1,
    resize="crop_flip",
    has_subtitles=True,
    reference_requires=("audio",),
)


def reference_audio_ids(annotation_dir: str | os.PathLike) -> frozenset[str]:
    """Ids of the MSR-VTT test videos that have audio (884), from the audio-caption annotations."""
    path = LAYOUT.annotation_path(annotation_dir, "test_audio_captions")
    records = read_records(path, required_fields=LAYOUT.required_fields, layout_name="msrvtt")
    return frozenset(r.id for r in records if r.extra.get("audio_caption"))
