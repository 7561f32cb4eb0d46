"""Zero-shot classification: class prompts against data tuples; top-1/top-5 and mAP.

Two protocols (``ZeroShotClassifier.protocol``):

``per_item`` (default): a data item (video, audio, ...) is classified by the class whose prompt
embedding spans the smallest volume with it: scores[n, c] = -Vol(prompt_c, tuple_n) (or the mean
cosine). The prompts are given (one text per class). Reported:
  top1, top5         percent of items whose true class ranks first / in the first five (ties count
                     against the item, as in ranking.py); single-label sets
  mAP                mean over classes (with at least one positive) of the average precision of
                     ranking the items by score; multi-label sets (labels bool[N, C])
  top1               for multi-label sets: percent of items whose best-scoring class is a positive
  positive_volume    mean Vol(true prompt, item) over items (single-label), 1 - GRAM alignment

``per_class``: the released code's protocol (``evaluation/evaluation_classification.py``, which
crashes as shipped). The class prompts are the captions of the evaluation
items, one per class (the released code deduplicates the captions; here the first item of each
class gives its class's prompt, and every item of a class must carry the same caption). Each class
*ranks the items*: scores[c, n] = -Vol(prompt_c, tuple_n); with ``rerank_top_k`` > 0 the top-k
items of every class are re-scored by the matching head (the released ITM re-rank, k = 50), the
others kept below them in volume order. Reported, besides the item metrics above computed from
the same matrix (an item's class = its best-scoring class):
  class/R@1, class/R@5, class/R@10   percent of classes with one of their items in the top k
  class/mAP          mean over classes of the AP of ranking the items for that class
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from gram_jax import volume
from gram_jax.evaluators.base import EncodeFn, MatchFn, collect
from gram_jax.evaluators.ranking import metrics_from_ranks, prefixed, ranks
from gram_jax.evaluators.scoring import TUPLE_SCORINGS, rerank_with_matching, tuple_scores

PROTOCOLS = ("per_item", "per_class")
# Captions of one class must encode to the same prompt embedding (up to float noise).
_SAME_PROMPT_ATOL = 1e-5


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


def per_class_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of classes ranking items: scores float[C, N] (row c ranks the N items, higher =
    better); labels int[N] class ids. Returns ``class/R@{1,5,10}``, ``class/mAP`` over the classes
    with at least one item, and the item metrics of `classification_metrics` on ``scores.T``."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    c, n = scores.shape
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected int[{n}] class ids, got {labels.dtype}{labels.shape}")
    out = classification_metrics(scores.T, labels)
    positives = np.zeros((c, n), bool)
    positives[labels, np.arange(n)] = True
    seen = positives.any(axis=1)  # classes without an item cannot be retrieved
    recall = metrics_from_ranks(ranks(scores[seen], positives[seen]))
    out |= prefixed("class", {k: recall[k] for k in ("R@1", "R@5", "R@10")})
    out["class/mAP"] = 100.0 * mean_average_precision(scores.T, positives.T)
    return out


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
      protocol: 'per_item' (prompts required) or 'per_class' (the released protocol: prompts
        from the items' captions, so the batches carry the anchor text; single-label only).
      rerank_top_k: 'per_class' only: items re-scored per class by the matching head (0 = none;
        the released code uses 50); needs match_fn in run().
      match_batch_size: pairs per match_fn call.
    """

    prompts: Mapping[str, np.ndarray] | None = None
    anchor: str = "text"
    modalities: tuple[str, ...] = ("video", "audio")
    label_key: str = "label"
    scoring: str = "volume"
    chunk_size: int = 4096
    protocol: str = "per_item"
    rerank_top_k: int = 0
    match_batch_size: int = 1024

    def __post_init__(self):
        if self.scoring not in TUPLE_SCORINGS:
            raise ValueError(
                f"scoring: expected one of {tuple(TUPLE_SCORINGS)}, got {self.scoring!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "per_item" and not self.prompts:
            raise ValueError("protocol 'per_item' needs prompts (one text per class)")
        if self.protocol == "per_item" and self.rerank_top_k:
            raise ValueError("rerank_top_k: the matching re-rank belongs to protocol 'per_class'")
        if isinstance(self.rerank_top_k, bool) or int(self.rerank_top_k) < 0:
            raise ValueError(f"rerank_top_k: expected an int >= 0, got {self.rerank_top_k!r}")

    def _scores(self, anchors: np.ndarray, data: np.ndarray, present: np.ndarray) -> np.ndarray:
        """float[Na, N]: the scoring of every anchor against every data tuple."""
        return tuple_scores(anchors, data, self.scoring, present, chunk_size=self.chunk_size)

    def run(
        self,
        encode_fn: EncodeFn,
        batches: Iterable[Mapping[str, np.ndarray]],
        match_fn: MatchFn | None = None,
    ) -> dict[str, float]:
        if self.protocol == "per_class":
            return self._run_per_class(encode_fn, batches, match_fn)
        encoded = encode_fn(self.prompts)
        if self.anchor not in encoded:
            raise KeyError(f"prompts: encode_fn returned {sorted(encoded)}, no {self.anchor!r}")
        classes = np.asarray(encoded[self.anchor], np.float32)  # [C, D]
        col = collect(
            encode_fn, batches, self.modalities, need_index=False, label_key=self.label_key
        )
        data = np.stack([col.embeddings[m] for m in self.modalities])  # [k-1, N, D]
        present = np.stack([col.present[m] for m in self.modalities])
        scores = self._scores(classes, data, present).T  # [N, C]
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

    def _run_per_class(self, encode_fn: EncodeFn, batches, match_fn: MatchFn | None):
        """The released protocol (module docstring); rows are items, their captions the prompts."""
        if self.rerank_top_k and match_fn is None:
            raise ValueError("rerank_top_k > 0 needs match_fn in run() (the matching head)")
        col = collect(encode_fn, batches, (self.anchor, *self.modalities), label_key=self.label_key)
        labels = np.asarray(col.label)
        if labels.ndim != 1:
            raise ValueError(
                f"protocol 'per_class': {self.label_key} must be int class ids (one caption per "
                f"class), got shape {labels.shape}"
            )
        # One row per item: the first row of each record (other captions repeat its media).
        _, rows = np.unique(col.index, return_index=True)
        rows = np.sort(rows)
        item_labels = labels[rows].astype(np.int64)
        num_classes = int(item_labels.max()) + 1
        missing = sorted(set(range(num_classes)) - set(item_labels.tolist()))
        if missing:
            raise ValueError(
                f"protocol 'per_class': classes {missing[:10]} have no item, so no caption gives "
                "their prompt (the released protocol takes prompts from the items)"
            )
        anchors = col.embeddings[self.anchor][rows]
        if not col.present[self.anchor][rows].all():
            raise ValueError("protocol 'per_class': every item needs its caption (present_text)")
        prompt_rows = np.array([np.flatnonzero(item_labels == c)[0] for c in range(num_classes)])
        prompts = anchors[prompt_rows]
        spread = np.abs(anchors - prompts[item_labels]).max(axis=1)
        if spread.max() > _SAME_PROMPT_ATOL:
            bad = int(rows[int(np.argmax(spread))])
            raise ValueError(
                f"protocol 'per_class': row {bad} (class {int(labels[bad])}) has another caption "
                "than the first item of its class; the released protocol needs one caption (the "
                "class name) per class"
            )
        data = np.stack([col.embeddings[m][rows] for m in self.modalities])
        present = np.stack([col.present[m][rows] for m in self.modalities])
        scores = self._scores(prompts, data, present)  # [C, N]
        if self.rerank_top_k:
            scores = rerank_with_matching(
                scores,
                lambda q, c: match_fn(rows[prompt_rows[q]], rows[c]),
                top_k=int(self.rerank_top_k),
                batch_size=self.match_batch_size,
            )
        return per_class_metrics(scores, item_labels)
