"""The Evaluator protocol and the shared collection of embeddings from evaluation batches.

An evaluator consumes an iterable of batches (the batch contract of docs/contracts.md) and an
``encode_fn(batch) -> {modality: float[B, D]}``; it returns flat ``{metric name: float}``.

Row bookkeeping used by every evaluator:
* a row with ``valid == False`` is padding of the last batch and is dropped (never counted);
* text queries are the valid rows themselves (one per caption);
* data items are the distinct ``index`` values, represented by the first valid row carrying that
  index (rows of other captions of the same record repeat the same media);
* "row positions" (what ``match_fn`` receives) count valid rows in iteration order from 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

EncodeFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
# match_fn(text_pos int[n], data_pos int[n]) -> float[n] probability that the text matches the
# data item; both are valid-row positions (see module docstring).
MatchFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Evaluator(Protocol):
    """Anything with ``run(encode_fn, batches, match_fn=None) -> dict[str, float]``."""

    def run(
        self,
        encode_fn: EncodeFn,
        batches: Iterable[Mapping[str, np.ndarray]],
        match_fn: MatchFn | None = None,
    ) -> dict[str, float]: ...


@dataclasses.dataclass
class Collected:
    """Valid rows of an evaluation set, concatenated over batches (N valid rows).

    embeddings: {modality: float32[N, D]}; present: {modality: bool[N]};
    index: int64[N] record ids; caption_index: int64[N]; label: int64[N] or bool[N, C] or None.
    """

    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    index: np.ndarray
    caption_index: np.ndarray
    label: np.ndarray | None

    @property
    def num_rows(self) -> int:
        return int(self.index.shape[0])


def _batch_field(batch: Mapping[str, np.ndarray], key: str, n: int, where: str) -> np.ndarray:
    if key not in batch:
        raise KeyError(f"{where}: batch has no key {key!r} (batch keys: {sorted(batch)})")
    value = np.asarray(batch[key])
    if value.shape[:1] != (n,):
        raise ValueError(f"{where}: batch[{key!r}] has shape {value.shape}, expected [{n}, ...]")
    return value


def collect(
    encode_fn: EncodeFn,
    batches: Iterable[Mapping[str, np.ndarray]],
    modalities: Sequence[str],
    *,
    need_index: bool = True,
    label_key: str | None = None,
) -> Collected:
    """Encode every batch and keep the valid rows of ``modalities``.

    Args:
      encode_fn: batch -> {modality: float[B, D]}; must return every name in ``modalities``.
      batches: batches following the batch contract; ``valid`` (bool[B]) defaults to all True,
        ``present_<m>`` (bool[B]) to all True, ``caption_index`` to 0.
      need_index: require ``index`` (int[B]) in every batch (retrieval groups captions by it).
      label_key: also collect this field (``label`` int[B] or a multi-hot bool[B, C]).
    """
    parts: dict[str, list[np.ndarray]] = {}
    count = 0
    for b, batch in enumerate(batches):
        where = f"evaluation batch {b}"
        embeddings = encode_fn(batch)
        missing = [m for m in modalities if m not in embeddings]
        if missing:
            raise KeyError(f"{where}: encode_fn returned {sorted(embeddings)}, missing {missing}")
        n = int(np.asarray(embeddings[modalities[0]]).shape[0])
        valid = (
            _batch_field(batch, "valid", n, where).astype(bool)
            if "valid" in batch
            else np.ones(n, bool)
        )
        fields = {}
        for m in modalities:
            emb = np.asarray(embeddings[m], np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"{where}: embedding {m!r} has shape {emb.shape}, want [{n}, D]")
            fields[f"emb/{m}"] = emb
            key = f"present_{m}"
            fields[f"present/{m}"] = (
                _batch_field(batch, key, n, where).astype(bool)
                if key in batch
                else np.ones(n, bool)
            )
        if need_index or "index" in batch:
            fields["index"] = _batch_field(batch, "index", n, where).astype(np.int64)
        else:  # classification without bookkeeping: number the rows
            fields["index"] = np.arange(count, count + n, dtype=np.int64)
        fields["caption_index"] = (
            _batch_field(batch, "caption_index", n, where).astype(np.int64)
            if "caption_index" in batch
            else np.zeros(n, np.int64)
        )
        if label_key is not None:
            fields["label"] = _batch_field(batch, label_key, n, where)
        for key, value in fields.items():
            parts.setdefault(key, []).append(value[valid])
        count += n
    if not parts:
        raise ValueError("evaluation: the batch iterable yielded no batches")
    cat = {key: np.concatenate(values) for key, values in parts.items()}
    if cat["index"].shape[0] == 0:
        raise ValueError("evaluation: every row was padding (valid == False)")
    return Collected(
        embeddings={m: cat[f"emb/{m}"] for m in modalities},
        present={m: cat[f"present/{m}"] for m in modalities},
        index=cat["index"],
        caption_index=cat["caption_index"],
        label=cat.get("label"),
    )
