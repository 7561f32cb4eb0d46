"""TriDigits on disk: the dataset layout, the build options, and how a config reads a build."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from data_pipelines.datasets import DatasetLayout
from data_pipelines.datasets.tridigits.splits import SPLITS

# Clips last 0.22-1.45 s: one 160-frame (1.6 s) filterbank slice holds any of them whole.
AUDIO_FRAMES = 160
# Every number word is one token of the build's vocabulary; with bert-base-uncased's (the MiniLM
# warm start) the longest is 7 WordPieces (Belarusian "Дзевяць"); 9 with [CLS] and [SEP].
TEXT_MAX_LEN = 12
# A caption (captions.py) adds six tokens after the word: ": left, clockwise, growing".
CAPTION_MAX_LEN = 16
#: What a record's text (``desc``) holds: the number word, or the word and its motion (captions.py).
TEXTS = ("word", "caption")

LAYOUT = DatasetLayout(
    name="tridigits",
    annotations={f"fold{k}_{s}" if k else s: f"fold{k}_{s}.json" for k in range(4) for s in SPLITS},
    required_fields=("label", "language", "voice", "split", "fold"),
    max_caption_len=TEXT_MAX_LEN,
    resize="resize",
    reference_requires=(),
)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What a build depends on; a dataset is rebuilt when any of these changes."""

    seed: int = 0
    folds: int = 4
    images_per_class: int = 500
    test_images_per_class: int = 50
    frames: int = 8
    # 28x28 frames with the 20x20 digit centred: MNIST's own geometry.
    size: int = 28
    fps: int = 8
    # "word": the number word (TriDigits v2); "caption": the word and the video's motion
    # (captions.py), ~350 distinct texts per test split instead of ~40.
    text: str = "word"

    def __post_init__(self):
        if self.text not in TEXTS:
            raise ValueError(f"TriDigits BuildOptions.text={self.text!r}: expected one of {TEXTS}")

    @property
    def text_max_len(self) -> int:
        """WordPieces read per text, [CLS] and [SEP] included."""
        return CAPTION_MAX_LEN if self.text == "caption" else TEXT_MAX_LEN


#: The options of the default build (the committed manifest, the quickstart).
DEFAULT_OPTIONS = BuildOptions()


def data_overrides(
    root: pathlib.Path, fold: int = 0, options: BuildOptions = DEFAULT_OPTIONS
) -> dict:
    """Keyword arguments of ``data_pipelines.config.data_config`` reading fold ``fold`` of a build.

    Frames are read at the built size (no crop: the digit must stay whole), audio as one 1.6 s
    slice, text up to ``options.text_max_len`` WordPieces of the build's ``vocab.txt``
    (vocab.py); splits ``SPLITS`` (splits.py).
    """
    if not 0 <= fold < options.folds:
        raise ValueError(f"tridigits: fold must be in [0, {options.folds}), got {fold}")
    root = pathlib.Path(root)
    return dict(
        dataset="tridigits",
        annotations={s: str(annotation_path(root, fold, s)) for s in SPLITS},
        video_dir=str(root / "videos"),
        audio_dir=str(root / "audios"),
        modalities=("video", "audio", "text"),
        num_frames=options.frames,
        image_size=options.size,
        resize="resize",
        audio=dict(mel_bins=64, target_length=AUDIO_FRAMES),
        text_max_len=dict(text=options.text_max_len),
        # The build's own vocabulary (tridigits/vocab.py): no two number words share ids.
        vocab_file=str(pathlib.Path(root) / "vocab.txt"),
        caption_mode="first",
    )


def default_cache_dir() -> pathlib.Path:
    """``$GRAM_JAX_TRIDIGITS_DIR`` or ``~/.cache/gram_jax/tridigits``."""
    env = os.environ.get("GRAM_JAX_TRIDIGITS_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "gram_jax" / "tridigits"


def annotation_path(root: pathlib.Path, fold: int, split: str) -> pathlib.Path:
    """Path of one fold's annotation file; ``split`` is ``train`` or ``test``."""
    return pathlib.Path(root) / "annotations" / f"fold{fold}_{split}.json"
