"""DiDeMo layout: paragraph captions (70 tokens), two audio slices, ``<id>.mp3`` audio files.

Reference config ``finetune_cfg/retrieval-didemo.json``: 8 frames, 2 audio slices, plain resize,
``max_caption_len`` 70. The released loader (``data/IndexAnno.py`` at b70c5c2) keeps a DiDeMo
record only if ``<video_id>.mp3`` exists in the audio folder; an earlier upstream version named the
files ``audio_<video_id>.mp3``. Audio extracted under that older name is read by setting the data
config key ``audio_prefix='audio_'``. The annotation folder's ``corrupted`` file lists 3 ids of
broken videos.
"""

from __future__ import annotations

import os
import pathlib

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="didemo",
    annotations={"train": "descs_ret_train.json", "test": "descs_ret_test.json"},
    required_fields=("video_id", "desc"),
    max_caption_len=70,
    train_frames=8,
    test_frames=8,
    audio_clips=2,
    resize="resize",
    reference_requires=("audio",),
)

CORRUPTED_FILE = "corrupted"


def corrupted_ids(annotation_dir: str | os.PathLike) -> frozenset[str]:
    """Ids listed in ``<annotation_dir>/corrupted`` (one per line; empty if the file is absent)."""
    path = pathlib.Path(annotation_dir) / CORRUPTED_FILE
    if not path.exists():
        return frozenset()
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())
