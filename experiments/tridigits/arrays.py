"""TriDigits decoded once into memory, through the real pipeline, for the reproduction sweep.

The sweep trains 100+ short runs on 2 shared CPU cores; decoding the same 5,000 videos and 320
clips for every run would cost more than the training. Every record of every fold is one of the
unique image videos (``media/images``) and one of the unique clips (``media/clips``), so this
module runs ``data_pipelines.pipeline.make_eval_iterator`` once over each unique medium (and once
over each fold's annotations for the tokenized words and labels) and assembles batches by
indexing. Evaluation-mode decoding is deterministic (the middle frame of each segment; one audio
slice holds a whole clip), so these arrays equal what the pipeline yields for the same records;
``tests/test_quickstart.py`` checks that on real records. What the sweep gives up is the
training-time frame jitter (a random frame per segment).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from data_pipelines.config import data_config
from data_pipelines.datasets import tridigits
from data_pipelines.datasets.tridigits import splits as tridigits_splits
from data_pipelines.pipeline import make_eval_iterator

# Splits derived from a fold's training records for choosing a budget without the test voices:
# "val" holds every n-th of the eligible training voices (sorted by name), "fit" the others.
# Records of a "val" voice are (training image, recording of a voice the "fit" runs never hear).
DERIVED = ("fit", "val")
VAL_EVERY = 4
# Which voices may go to "val" (``val_voices``):
# - "kept_language": only voices whose language keeps another voice in "fit", the rule the test
#   folds follow (splits.py), so every val text is a word the fit runs have read;
# - "every_fourth": any voice (the rule of the committed fine-tuning runs). On fold 0 it holds out
#   the only training voices of 5 languages: 948 of the 1,252 val records (48 of 66 distinct
#   texts) carry words "fit" never shows, so every direction with a text measures chance there.
VAL_RULES = ("kept_language", "every_fourth")
# "kept_language" picks from fewer voices (those of languages with two or more training voices):
# every 2nd of them, ~6 voices per fold, about the share "every_fourth" takes.
KEPT_LANGUAGE_EVERY = 2


def val_voices(voices: list[str], languages: list[str], rule: str = "kept_language") -> set[str]:
    """The training voices of a fold that form "val" (``VAL_RULES``).

    Args:
      voices, languages: each training voice and its language code (``en_GB``: base ``en``).
    """
    if rule not in VAL_RULES:
        raise ValueError(f"TriDigits val rule {rule!r}: expected one of {VAL_RULES}")
    ordered = sorted(set(voices))
    if rule == "every_fourth":
        return set(ordered[::VAL_EVERY])
    language = {
        v: tridigits_splits.base_language(lang) for v, lang in zip(voices, languages, strict=True)
    }
    voices_of: dict[str, int] = {}
    for v in ordered:
        voices_of[language[v]] = voices_of.get(language[v], 0) + 1
    eligible = [v for v in ordered if voices_of[language[v]] >= 2]
    chosen: set[str] = set()
    for v in eligible[::KEPT_LANGUAGE_EVERY]:
        # Never the last fit voice of a language.
        if voices_of[language[v]] - sum(language[c] == language[v] for c in chosen) >= 2:
            chosen.add(v)
    return chosen


def _eval_arrays(config, split: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {k: [] for k in keys}
    index = []
    for batch in make_eval_iterator(config, split, process_index=0, process_count=1):
        valid = np.asarray(batch["valid"], bool)
        for k in keys:
            out[k].append(np.asarray(batch[k])[valid])
        index.append(np.asarray(batch["index"])[valid])
    order = np.argsort(np.concatenate(index), kind="stable")
    return {k: np.concatenate(v)[order] for k, v in out.items()}


def _media_config(root: pathlib.Path, listing: pathlib.Path, modality: str, frames: int, size: int):
    base = tridigits.data_overrides(root)
    return data_config(
        dataset=None,
        annotations={"all": str(listing)},
        video_dir=str(root / "media" / "images"),
        audio_dir=str(root / "media" / "clips"),
        modalities=(modality,),
        num_frames=frames,
        image_size=size,
        resize="resize",
        audio=base["audio"],
        eval_batch_size=64,
    )


def identities(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The item identities of a ``TriDigitsArrays.split`` table, as
    `gram_jax.evaluators.distinct.split_metrics` reads them: its text (and the word a recording
    fixes), its image, its recording (clip)."""
    return {
        "text": table["desc"],
        "word": table["word"],
        "video": table["image_row"],
        "audio": table["clip_row"],
    }


class TriDigitsArrays:
    """Decoded media of one TriDigits build plus per-fold record tables.

    Attributes:
      videos: uint8[n_images, F, S, S, 3], row i = image ``image_ids[i]``.
      clips: float32[n_clips, 1, T, M] normalised filterbank slices, row j = ``clip_ids[j]``.
    """

    def __init__(
        self,
        root: str | pathlib.Path,
        *,
        frames: int,
        size: int,
        cache_dir: pathlib.Path,
        val_rule: str = "kept_language",
    ):
        root = pathlib.Path(root)
        self.val_rule = val_rule  # checked by val_voices when "fit" or "val" is first read
        manifest = json.loads((root / "manifest.json").read_text())
        self.root = root
        self.options = tridigits.BuildOptions(**manifest["options"])
        cache_dir.mkdir(parents=True, exist_ok=True)
        image_ids = sorted(pathlib.Path(p).stem for p in manifest["videos"])
        clip_ids = sorted(pathlib.Path(p).stem for p in manifest["audios"])
        key = f"{manifest['options']['seed']}_{len(image_ids)}_{frames}_{size}"
        cache = cache_dir / f"tridigits_arrays_{key}.npz"
        if cache.exists():
            data = np.load(cache)
            self.videos, self.clips = data["videos"], data["clips"]
        else:
            self.videos = self._decode(root, cache_dir, image_ids, "video", frames, size)
            self.clips = self._decode(root, cache_dir, clip_ids, "audio", frames, size)
            np.savez(cache, videos=self.videos, clips=self.clips)
        self.image_row = {int(i[3:]): n for n, i in enumerate(image_ids)}  # "img0123" -> row
        self.clip_row = {c: n for n, c in enumerate(clip_ids)}
        self._folds: dict[tuple[int, str], dict[str, np.ndarray]] = {}

    @staticmethod
    def _decode(root, cache_dir, ids, modality, frames, size) -> np.ndarray:
        listing = cache_dir / f"unique_{modality}.json"
        listing.write_text(json.dumps([{"id": i, "desc": i} for i in ids]))
        config = _media_config(root, listing, modality, frames, size)
        return _eval_arrays(config, "all", (modality,))[modality]

    def split(self, fold: int, split: str) -> dict[str, np.ndarray]:
        """Record table of one fold split: rows into videos/clips, text ids/mask, labels, and
        the record's text (``desc``, str[N]), its number word (``word``, str[N]: the text itself
        in a word build, the word of its caption in a caption build), voice and language (str[N]).

        ``split``: a split of the build's annotations (train, test, test_seen, train_sample) or
        one of ``DERIVED`` (a voice-disjoint division of ``train``, by ``val_rule``).
        """
        if split in DERIVED and (fold, split) not in self._folds:
            train = self.split(fold, "train")
            val = val_voices(train["voice"].tolist(), train["language"].tolist(), self.val_rule)
            held = np.isin(train["voice"], sorted(val))
            for name, keep in (("fit", ~held), ("val", held)):
                self._folds[(fold, name)] = {k: v[keep] for k, v in train.items()}
        if (fold, split) not in self._folds:
            path = tridigits.annotation_path(self.root, fold, split)
            records = json.loads(path.read_text(encoding="utf-8"))
            overrides = tridigits.data_overrides(self.root, fold, self.options)
            config = data_config(**{**overrides, "modalities": ("text",)}, eval_batch_size=256)
            text = _eval_arrays(config, split, ("text_ids", "text_mask", "label"))
            self._folds[(fold, split)] = dict(
                image_row=np.array([self.image_row[r["image_index"]] for r in records], np.int32),
                clip_row=np.array(
                    [self.clip_row[f"{r['voice']}_{r['label']}"] for r in records], np.int32
                ),
                desc=np.array([r["desc"] for r in records]),
                word=np.array([r.get("word", r["desc"]) for r in records]),
                voice=np.array([r["voice"] for r in records]),
                language=np.array([r["language"] for r in records]),
                **text,
            )
        return self._folds[(fold, split)]

    def batch(self, fold: int, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The contract batch (docs/contracts.md) of records ``rows`` of a fold split."""
        table = self.split(fold, split)
        rows = np.asarray(rows)
        n = len(rows)
        true = np.ones(n, bool)
        return {
            "video": self.videos[table["image_row"][rows]],
            "audio": self.clips[table["clip_row"][rows]],
            "text_ids": table["text_ids"][rows],
            "text_mask": table["text_mask"][rows],
            "label": table["label"][rows],
            "index": rows.astype(np.int32),
            "caption_index": np.zeros(n, np.int32),
            "valid": true,
            "present_video": true,
            "present_audio": true,
            "present_text": true,
        }
