"""Zero-shot classification: argmin volume over class prompts; top-1/top-5 and mAP.

A data item (video, audio, ...) is classified by the class whose prompt embedding spans the
smallest volume with it: scores[n, c] = -Vol(prompt_c, tuple_n) (or the mean cosine). Reported:
  top1, top5         percent of items whose true class ranks first / in the first five (ties count
                     against the item, as in ranking.py); single-label sets
  mAP                mean over classes (with at least one positive) of the average precision of
                     ranking the items by score; multi-label sets (labels bool[N, C])
  top1               for multi-label sets: percent of items whose best-scoring class is a positive
  positive_volume    mean Vol(true prompt, item) over items (single-label), 1 - GRAM alignment
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from gram_jax import volume
from gram_jax.evaluators.base import EncodeFn, MatchFn, collect
from gram_jax.evaluators.ranking import metrics_from_ranks, ranks
from gram_jax.evaluators.scoring import TUPLE_SCORINGS, tuple_scores


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of ranking N items by score (higher first) against bool[N] positives.

    Tied scores form one threshold (their precision is taken after the whole tie group), the
    definition of sklearn.metrics.average_precision_score. NaN when there is no positive.
    """
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    if not positives.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order]
    true_pos = np.cumsum(y)
    # Position of the last element of each element's tie group.
    group_end = np.searchsorted(-s, -s, side="right") - 1
    precision = true_pos[group_end] / (group_end + 1)
    return float(precision[y].sum() / y.sum())


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with a positive of the AP of column c: scores float[N, C], labels bool."""
    scores, labels = np.asarray(scores), np.asarray(labels, bool)
    if scores.shape != labels.shape:
        raise ValueError(f"labels: expected bool{list(scores.shape)}, got shape {labels.shape}")
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    valid = [ap for ap in aps if not np.isnan(ap)]
    if not valid:
        raise ValueError("labels: no class has a positive item")
    return float(np.mean(valid))


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scores float[N, C] (higher = better); labels int[N] (single-label) or bool[N, C] (multi)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    n, c = scores.shape
    if labels.ndim == 2:
        top = np.argmax(scores, axis=1)
        out = {"mAP": 100.0 * mean_average_precision(scores, labels)}
        out["top1"] = float(100.0 * np.mean(labels.astype(bool)[np.arange(n), top]))
        return out
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected int[{n}] or bool[{n}, {c}], got {labels.dtype}{list(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(
            f"labels: class ids must lie in [0, {c}), got [{labels.min()}, {labels.max()}]"
        )
    rank = ranks(scores, labels.astype(np.int64))
    recall = metrics_from_ranks(rank)
    return {"top1": recall["R@1"], "top5": recall["R@5"], "MnR": recall["MnR"]}


@dataclasses.dataclass
class ZeroShotClassifier:
    """Zero-shot classification evaluator; an `Evaluator` (base.py).

    Args:
      prompts: a text batch (``<anchor>_ids``/``<anchor>_mask`` per the batch contract) holding one
        prompt per class, in class-id order; encoded once per run with encode_fn.
      anchor: the prompt modality; modalities: the data tuple.
      label_key: batch field with the labels: int[B] class ids or bool[B, C] multi-hot.
      scoring: a `scoring.TUPLE_SCORINGS` name: 'volume' (argmin volume), 'cosine' (mean
        text-modality cosine), 'area' or 'symile'.
    """

    prompts: Mapping[str, np.ndarray]
    anchor: str = "text"
    modalities: tuple[str, ...] = ("video", "audio")
    label_key: str = "label"
    scoring: str = "volume"
    chunk_size: int = 4096

    def __post_init__(self):
        if self.scoring not in TUPLE_SCORINGS:
            raise ValueError(
                f"scoring: expected one of {tuple(TUPLE_SCORINGS)}, got {self.scoring!r}"
            )

    def run(
        self,
        encode_fn: EncodeFn,
        batches: Iterable[Mapping[str, np.ndarray]],
        match_fn: MatchFn | None = None,
    ) -> dict[str, float]:
        del match_fn  # no re-ranking for classification
        encoded = encode_fn(self.prompts)
        if self.anchor not in encoded:
            raise KeyError(f"prompts: encode_fn returned {sorted(encoded)}, no {self.anchor!r}")
        classes = np.asarray(encoded[self.anchor], np.float32)  # [C, D]
        col = collect(
            encode_fn, batches, self.modalities, need_index=False, label_key=self.label_key
        )
        data = np.stack([col.embeddings[m] for m in self.modalities])  # [k-1, N, D]
        present = np.stack([col.present[m] for m in self.modalities])
        scores = tuple_scores(
            classes, data, self.scoring, present, chunk_size=self.chunk_size
        ).T  # [N, C]
        labels = np.asarray(col.label)
        if labels.ndim == 2 and labels.shape[1] != classes.shape[0]:
            raise ValueError(
                f"{self.label_key}: multi-hot labels have {labels.shape[1]} classes, "
                f"prompts have {classes.shape[0]}"
            )
        out = classification_metrics(scores, labels)
        if labels.ndim == 1:
            positive = volume.matched_volume(
                jnp.asarray(classes[labels]), jnp.asarray(data), jnp.asarray(present)
            )
            out["positive_volume"] = float(np.mean(np.asarray(positive)))
            out["one_minus_gram"] = 1.0 - out["positive_volume"]
        return out
