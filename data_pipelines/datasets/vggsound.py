"""VGGSound layout for zero-shot audio-visual classification: one class per 10 s clip.

The paper evaluates GRAM on VGGSound classification (paper Sec. 5); the released code has
no VGGSound config or annotation (its issue #6), only an evaluator that deduplicates the
captions of the test records into one prompt per class (section 5.2). The layout expects a
VAST-style test annotation whose records carry the class name as caption and its id as
``label``: ``{"video_id": "<ytid>_<start>", "desc": "<class name>", "label": <int>}``, with
``videos/<video_id>.mp4`` and ``audios/<video_id>.mp3``. Frames, audio slices and the plain resize
follow the released configs of other 10 s clip sets (VATEX, AudioCaps).
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="vggsound",
    annotations={"test": "descs_cls_test.json"},
    required_fields=("video_id", "desc", "label"),
    max_caption_len=40,
    train_frames=8,
    test_frames=8,
    audio_clips=1,
    resize="resize",
    reference_requires=("audio",),
)
