"""The 4 real reference clips committed at data_pipelines/reference_data/media (see its README).

Record ids are ``"1"`` .. ``"4"``; the released files name video and audio differently
(``videos/video<i>.mp4``, ``audios/audio<i>.mp3``), which the prefixes map, so the committed files
are read in place (no links, no copies). ``annotations.json`` there holds the 4 captions of the
upstream inference notebook. Used by the ``runlocal`` experiment configs (CPU smoke runs).
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout
from data_pipelines.reference_media import REFERENCE_MEDIA_DIR as MEDIA_DIR

LAYOUT = DatasetLayout(
    name="reference_clips",
    annotations={"train": "annotations.json", "test": "annotations.json"},
    video_prefix="video",
    audio_prefix="audio",
    required_fields=("video_id", "desc"),
    max_caption_len=16,
    max_subtitle_len=16,
    train_frames=2,
    test_frames=2,
    audio_clips=1,
)

__all__ = ["LAYOUT", "MEDIA_DIR"]
