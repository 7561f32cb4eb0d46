"""The decode/tokenize MapTransform of the Grain graph: plan item -> one sample's arrays.

Plan items are ``int64[3] = (sample, epoch, position)`` (pipeline.TrainPlan / EvalPlan); ``sample``
is -1 for an evaluation padding row. The output is one row of the batch contract
(docs/contracts.md); ``.batch()`` stacks rows into ``[B, ...]``.

Grain's worker processes unpickle this transform: it is a module-level class holding plain data,
and it builds its tokenizer and reader lazily inside the process that uses them.
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any

import grain
import ml_collections
import numpy as np
import threadpoolctl
from absl import logging

from data_pipelines import prepared_source, samples
from data_pipelines.config import TEXT_MODALITIES
from data_pipelines.media import MediaError
from data_pipelines.media import text as text_media

# Random streams of one sample: independent draws for the frames and the audio slices.
_VIDEO_STREAM, _AUDIO_STREAM = 0, 1


def sample_rngs(seed: int, epoch: int, sample: int) -> tuple[np.random.Generator, ...]:
    """(video_rng, audio_rng) of one sample in one epoch.

    A pure function of (seed, epoch, sample): whichever process, worker or thread decodes the
    sample, and whether the iterator was restored from a checkpoint, the draws are the same.
    """
    return tuple(
        np.random.default_rng([seed, epoch, sample, stream])
        for stream in (_VIDEO_STREAM, _AUDIO_STREAM)
    )


def placeholder_batch(
    config: ml_collections.ConfigDict, modalities, n: int, *, train: bool = False
) -> dict[str, np.ndarray]:
    """Zero inputs of ``modalities`` for ``n`` rows, shaped by the data ``config``.

    ``video`` uint8[n, F, S, S, 3] (``F`` the train or evaluation frame count), ``audio``
    float32[n, C, T, M], ``<m>_ids``/``<m>_mask`` int32[n, L_m] for text-like modalities. Used
    where an encoder that runs every tower gets rows without some modality (text-only prompts,
    media-only items); the caller marks them absent.
    """
    frames = config.num_frames if train else (config.eval_num_frames or config.num_frames)
    a = config.audio
    batch: dict[str, np.ndarray] = {}
    for m in modalities:
        if m in TEXT_MODALITIES:
            length = int(config.text_max_len[m])
            batch[f"{m}_ids"] = np.zeros((n, length), np.int32)
            batch[f"{m}_mask"] = np.zeros((n, length), np.int32)
        elif m == "audio":
            batch[m] = np.zeros((n, a.num_clips, a.target_length, a.mel_bins), np.float32)
        elif m == "video":
            batch[m] = np.zeros((n, frames, config.image_size, config.image_size, 3), np.uint8)
        else:
            raise ValueError(f"placeholder_batch: unknown modality {m!r}")
    return batch


def _make_reader(split: samples.SplitData, config: ml_collections.ConfigDict, train: bool):
    if config.prepared_dir is None:
        return samples.RawReader(split, config, train=train)
    return prepared_source.PreparedReader(split, config, train=train)


@functools.cache
def _limit_blas(pid: int, threads: int) -> None:
    """Limit numpy's BLAS to ``threads`` in this process (``pid``: once per worker process too)."""
    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


class LoadSample(grain.transforms.Map):
    """Decodes and tokenizes one sample; applies the bad-data policy.

    Output (one row; ``F`` frames, ``S`` image size, ``C/T/M`` audio clips/frames/bins, ``L_m``
    the max length of text-like modality ``m``):
      ``video`` uint8[F, S, S, 3], ``audio`` float32[C, T, M], ``<m>_ids``/``<m>_mask`` int32[L_m],
      ``present_<m>`` bool, ``index`` int32 (annotation position, -1 on padding),
      ``caption_index`` int32, ``valid`` bool, ``label`` int32, or bool[C] multi-hot for
      multi-label sets (labelled datasets only; padding rows: -1 / all False).
    """

    def __init__(self, split: samples.SplitData, config: ml_collections.ConfigDict, *, train: bool):
        self._split = split
        self._config = ml_collections.ConfigDict(config.to_dict())
        self._train = train
        self._modalities = tuple(config.modalities)
        self._seed = int(config.seed)
        self._bad_data = config.bad_data
        zeros = placeholder_batch(config, ("video", "audio"), 1, train=train)
        self._zeros = {m: zeros[m][0] for m in ("video", "audio")}
        self._max_len = {m: int(config.text_max_len[m]) for m in TEXT_MODALITIES}
        self._encode_empty = config.empty_text_policy == "encode"
        self._reader = None
        self._tokenizer = None
        #: (modality, reason) -> count of samples whose media were masked under bad_data='skip'
        #: (counted in the process that decoded them).
        self.skipped: collections.Counter = collections.Counter()

    @classmethod
    def from_config(cls, config, split: samples.SplitData, *, train: bool) -> LoadSample:
        return cls(split, config, train=train)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # rebuilt in the worker (open files do not pickle)
        state["_tokenizer"] = None
        return state

    def _get_reader(self):
        if self._reader is None:
            if self._config.blas_threads is not None:
                _limit_blas(os.getpid(), self._config.blas_threads)
            self._reader = _make_reader(self._split, self._config, self._train)
        return self._reader

    def _get_tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = text_media.from_data_config(self._config)
        return self._tokenizer

    def _padding_row(self) -> dict[str, np.ndarray]:
        row: dict[str, np.ndarray] = {}
        for m in self._modalities:
            if m in TEXT_MODALITIES:
                row[f"{m}_ids"] = np.zeros((self._max_len[m],), np.int32)
                row[f"{m}_mask"] = np.zeros((self._max_len[m],), np.int32)
            else:
                row[m] = self._zeros[m]
            row[f"present_{m}"] = np.bool_(False)
        row["index"] = np.int32(-1)
        row["caption_index"] = np.int32(-1)
        row["valid"] = np.bool_(False)
        labels = self._split.labels
        if labels is not None:
            row["label"] = np.int32(-1) if labels.ndim == 1 else np.zeros(labels.shape[1], bool)
        return row

    def _media(self, modality: str, record: int, rng) -> tuple[np.ndarray, bool]:
        reader = self._get_reader()
        try:
            return getattr(reader, modality)(record, rng), True
        except MediaError as err:
            if self._bad_data == "raise":
                raise MediaError(
                    err.path,
                    f"{err.reason} (record id {self._split.ids[record]!r} of "
                    f"{self._split.annotation_path}; bad_data='raise')",
                ) from err
            self.skipped[(modality, err.reason)] += 1
            # Once per modality and process: the trainer counts every masked item (metrics
            # data/skipped_<m> and the end-of-run summary), so repeats would only flood the log.
            if sum(n for (m, _), n in self.skipped.items() if m == modality) == 1:
                logging.warning(
                    "bad_data='skip': %s of id %r masked: %s (further masked %s items are "
                    "counted in the metrics and the run summary, not logged)",
                    modality,
                    self._split.ids[record],
                    err,
                    modality,
                )
            return self._zeros[modality], False

    def _text(self, modality: str, record: int, caption: int) -> tuple[str, bool]:
        """(string to tokenize, present) of one text-like modality of ``record``.

        A caption or subtitle that does not exist (no caption at this index, no ``subtitle``
        field) is absent. An empty or whitespace-only string (238 of MSR-VTT's 1000 test
        subtitles) is absent under ``empty_text_policy='absent'``; under ``'encode'`` it is
        tokenized as ``[CLS][SEP]`` and present, as in the released code, where that constant
        vector enters the Gram matrix like a real subtitle.
        """
        if modality == "text":
            captions = self._split.captions[record]
            text = captions[caption] if caption < len(captions) else None
        else:
            text = self._split.subtitles[record]
        if text is None:
            return "", False
        if text.strip() or self._encode_empty:
            return text, True
        return "", False

    def map(self, item: np.ndarray) -> dict[str, np.ndarray]:
        sample, epoch, _ = (int(v) for v in item)
        if sample < 0:
            return self._padding_row()
        record = int(self._split.sample_record[sample])
        caption = int(self._split.sample_caption[sample])
        video_rng, audio_rng = (
            sample_rngs(self._seed, epoch, sample) if self._train else (None,) * 2
        )
        row: dict[str, np.ndarray] = {}
        for m in self._modalities:
            if m in TEXT_MODALITIES:
                text, present = self._text(m, record, caption)
                ids, mask = self._get_tokenizer().encode([text], self._max_len[m])
                if not present:
                    ids, mask = np.zeros_like(ids), np.zeros_like(mask)
                row[f"{m}_ids"], row[f"{m}_mask"] = ids[0], mask[0]
            else:
                rng = video_rng if m == "video" else audio_rng
                row[m], present = self._media(m, record, rng)
            row[f"present_{m}"] = np.bool_(present)
        row["index"] = np.int32(self._split.positions[record])
        row["caption_index"] = np.int32(caption)
        row["valid"] = np.bool_(True)
        labels = self._split.labels
        if labels is not None:
            row["label"] = np.int32(labels[record]) if labels.ndim == 1 else labels[record].copy()
        return row
