"""TriDigits splits and pairings: held-out images, K folds over whole voices, one record per pair.

Splits (all deterministic given the seed):
- Images: per digit, a seeded permutation; the first ``test_images_per_class`` are held out for
  testing in every fold, the next ``images_per_class - test_images_per_class`` train.
- Voices: K folds over whole voices, so every test speaker is unseen in training. A voice may be
  held out only where another voice of the same language (base code: en_GB counts as en) stays in
  training; a language with one voice is always in training. Without that rule a test language's
  number words would never be seen by the text tower trained from scratch, and text retrieval for
  it would measure nothing but chance.
- Records: in fold k, every training image is paired with a training clip of the same digit
  (round robin over a seeded order, so clips are used equally often), and every clip of a fold-k
  voice is paired with one held-out image of its digit (again round robin).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from data_pipelines.datasets.tridigits.sources import SpeechClip

ALWAYS_TRAIN = -1  # fold of a voice that is never held out (its language has no second voice)


@dataclasses.dataclass(frozen=True)
class Pair:
    """One TriDigits record before its media are written."""

    image_index: int
    clip: SpeechClip
    split: str  # "train" | "test"

    @property
    def record_id(self) -> str:
        # The same (image, clip) pair gets the same id in every fold, so media are shared.
        return f"d{self.clip.label}_img{self.image_index:04d}_{self.clip.voice}"


def base_language(language: str) -> str:
    """``en_GB`` -> ``en``: voices of one language share their number words."""
    return language.split("_")[0].lower()


def split_images(
    labels: np.ndarray, images_per_class: int, test_images_per_class: int, seed: int
) -> dict[str, np.ndarray]:
    """Choose training and held-out images per digit.

    Args:
      labels: int32[N] digit of each image.
    Returns:
      {"train": int64[n_train], "test": int64[n_test]} sorted image indices.
    """
    if not 0 < test_images_per_class < images_per_class:
        raise ValueError(
            f"need 0 < test_images_per_class ({test_images_per_class}) < images_per_class "
            f"({images_per_class})"
        )
    rng = np.random.default_rng([seed, 1])
    train, test = [], []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        if len(idx) < images_per_class:
            raise ValueError(f"digit {digit} has {len(idx)} images, fewer than {images_per_class}")
        order = rng.permutation(idx)
        test.append(order[:test_images_per_class])
        train.append(order[test_images_per_class:images_per_class])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def assign_voice_folds(clips: list[SpeechClip], folds: int, seed: int) -> dict[str, int]:
    """voice -> fold in [0, folds), or ALWAYS_TRAIN for single-voice languages.

    Voices of one language are spread over the folds so that every fold keeps at least one voice
    of every language in training; among the allowed folds the one with the fewest held-out clips
    so far is chosen, which balances the test sets.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    voice_clips = collections.Counter(c.voice for c in clips)
    voice_lang = {c.voice: base_language(c.language) for c in clips}
    by_lang: dict[str, list[str]] = collections.defaultdict(list)
    for voice in sorted(voice_clips):
        by_lang[voice_lang[voice]].append(voice)
    rng = np.random.default_rng([seed, 2])
    assignment = {}
    load = np.zeros(folds)
    # Languages with most voices first: they constrain the folds most.
    langs = sorted(by_lang, key=lambda lang: (-len(by_lang[lang]), lang))
    for lang in langs:
        voices = list(rng.permutation(by_lang[lang]))
        if len(voices) == 1:
            assignment[voices[0]] = ALWAYS_TRAIN
            continue
        per_fold = collections.Counter()
        for voice in voices:
            # Never hold out all voices of a language in one fold.
            allowed = [f for f in range(folds) if per_fold[f] + 1 < len(voices)]
            best = min(allowed, key=lambda f: (per_fold[f], load[f], rng.random()))
            assignment[str(voice)] = best
            per_fold[best] += 1
            load[best] += voice_clips[voice]
    return assignment


def _round_robin(items: np.ndarray, rng: np.random.Generator):
    order = list(rng.permutation(items))
    i = 0
    while True:
        yield order[i % len(order)]
        i += 1


def fold_pairs(
    fold: int,
    image_split: dict[str, np.ndarray],
    image_labels: np.ndarray,
    clips: list[SpeechClip],
    voice_fold: dict[str, int],
    seed: int,
) -> dict[str, list[Pair]]:
    """The training and test pairs of one fold: {"train": [...], "test": [...]}."""
    rng = np.random.default_rng([seed, 3, fold])
    train_clips = collections.defaultdict(list)
    test_clips = collections.defaultdict(list)
    for i, clip in enumerate(clips):
        (test_clips if voice_fold[clip.voice] == fold else train_clips)[clip.label].append(i)
    pairs: dict[str, list[Pair]] = {"train": [], "test": []}
    for digit in range(10):
        if not train_clips[digit]:
            raise ValueError(f"fold {fold}: no training clip of digit {digit}")
        clip_cycle = _round_robin(np.array(train_clips[digit]), rng)
        for image in image_split["train"][image_labels[image_split["train"]] == digit]:
            pairs["train"].append(Pair(int(image), clips[int(next(clip_cycle))], "train"))
        image_cycle = _round_robin(
            image_split["test"][image_labels[image_split["test"]] == digit], rng
        )
        for clip_index in test_clips[digit]:
            pairs["test"].append(Pair(int(next(image_cycle)), clips[clip_index], "test"))
    for split in pairs:
        pairs[split].sort(key=lambda p: p.record_id)
    return pairs
