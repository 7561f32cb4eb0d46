"""AudioSet layout for zero-shot audio-visual classification: several classes per 10 s clip.

The paper evaluates GRAM on AudioSet classification (paper Sec. 5); the released code
has no AudioSet config or annotation. Records list their classes: ``{"video_id": "<ytid>_<start>",
"desc": "<first class name>", "label": [<int>, ...]}`` (``label`` becomes a multi-hot row, data
config ``num_classes`` = 527 for the full ontology), with ``videos/<video_id>.mp4`` and
``audios/<video_id>.mp3``. Class prompts come from the evaluator config (one name per class id).
"""

from __future__ import annotations

from data_pipelines.datasets import DatasetLayout

LAYOUT = DatasetLayout(
    name="audioset",
    annotations={"test": "descs_cls_eval.json"},
    required_fields=("video_id", "label"),
    max_caption_len=40,
    train_frames=8,
    test_frames=8,
    audio_clips=1,
    resize="resize",
    reference_requires=("audio",),
)
