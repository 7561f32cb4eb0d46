"""Ranks and retrieval metrics from a score matrix (higher score = better), vectorised in NumPy.

Rank convention (0-based; metrics report rank + 1 like the reference's MdR/MnR):
  rank(q) = number of *incorrect* candidates whose score is >= the best correct candidate's score.
With several correct candidates (e.g. the captions of a video in video-to-text retrieval) the
best-ranked one counts, as in the released evaluation. Ties count against the query (pessimistic):
a collapsed model whose scores are all equal gets the worst rank, never a lucky one (the reference
breaks ties by sort order, which is arbitrary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECALL_AT = (1, 5, 10)
_ROW_BLOCK = 2048  # rows per block when comparing, bounds the temporary bool matrix


def gt_pairs(gt, num_queries: int, num_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a ground truth to unique (query, candidate) index pairs, int64[P] each.

    Accepted forms:
      * int[Nq]: one correct candidate per query;
      * bool[Nq, Nc]: a correctness mask;
      * a sequence of Nq iterables (set, list, array) of correct candidate indices;
      * a tuple (query_idx int[P], cand_idx int[P]) of explicit pairs.
    Every query must have at least one correct candidate.
    """
    if isinstance(gt, tuple) and len(gt) == 2 and all(isinstance(g, np.ndarray) for g in gt):
        qi, ci = (np.asarray(g, np.int64).ravel() for g in gt)
        if qi.shape != ci.shape:
            raise ValueError(f"gt pairs: query and candidate arrays differ: {qi.shape} {ci.shape}")
    elif isinstance(gt, np.ndarray) and gt.dtype == np.bool_:
        if gt.shape != (num_queries, num_candidates):
            raise ValueError(
                f"gt: bool mask must be [{num_queries}, {num_candidates}], got {gt.shape}"
            )
        qi, ci = np.nonzero(gt)
    elif isinstance(gt, np.ndarray) and gt.ndim == 1 and np.issubdtype(gt.dtype, np.integer):
        if gt.shape[0] != num_queries:
            raise ValueError(f"gt: expected int[{num_queries}], got shape {gt.shape}")
        qi, ci = np.arange(num_queries), gt.astype(np.int64)
    elif isinstance(gt, Sequence) and not isinstance(gt, (str, bytes)):
        if len(gt) != num_queries:
            raise ValueError(f"gt: expected {num_queries} sets of candidates, got {len(gt)}")
        lists = [
            np.fromiter(g, np.int64)
            if not isinstance(g, (int, np.integer))
            else np.array([g], np.int64)
            for g in gt
        ]
        qi = np.repeat(np.arange(num_queries), [len(g) for g in lists])
        ci = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    else:
        raise TypeError(f"gt: unsupported ground-truth type {type(gt).__name__}")
    qi, ci = np.asarray(qi, np.int64), np.asarray(ci, np.int64)
    if ci.size and (ci.min() < 0 or ci.max() >= num_candidates):
        raise ValueError(
            f"gt: candidate indices must lie in [0, {num_candidates}), got [{ci.min()}, {ci.max()}]"
        )
    if qi.size and (qi.min() < 0 or qi.max() >= num_queries):
        raise ValueError(f"gt: query indices must lie in [0, {num_queries})")
    flat = np.unique(qi * num_candidates + ci)
    qi, ci = flat // num_candidates, flat % num_candidates
    covered = np.zeros(num_queries, bool)
    covered[qi] = True
    if not covered.all():
        raise ValueError(
            f"gt: {int((~covered).sum())} queries have no correct candidate "
            f"(first: query {int(np.argmin(covered))})"
        )
    return qi, ci


def ranks(scores: np.ndarray, gt) -> np.ndarray:
    """0-based rank of the best correct candidate of each query: int64[Nq] (module docstring).

    scores: float[Nq, Nc], higher = better; gt: any form accepted by `gt_pairs`.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected [Nq, Nc], got shape {scores.shape}")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(
            f"scores: {int(bad.sum())} non-finite entries (first at "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])})"
        )
    nq, nc = scores.shape
    qi, ci = gt_pairs(gt, nq, nc)
    correct_scores = scores[qi, ci]
    best = np.full(nq, -np.inf, scores.dtype)
    np.maximum.at(best, qi, correct_scores)
    at_least_best = np.zeros(nq, np.int64)
    for start in range(0, nq, _ROW_BLOCK):
        block = slice(start, start + _ROW_BLOCK)
        at_least_best[block] = (scores[block] >= best[block, None]).sum(axis=1)
    correct_at_least = np.bincount(qi, weights=correct_scores >= best[qi], minlength=nq)
    return at_least_best - correct_at_least.astype(np.int64)


def recall_at(rank: np.ndarray, k: int) -> float:
    """Fraction (0..1) of queries whose best correct candidate is among the first k.

    rank: int[Nq] 0-based ranks (`ranks`). Fractions are the unit of this module; percent appears
    only where metrics are reported (`metrics_from_ranks`).
    """
    return float(np.mean(np.asarray(rank) < k))


def metrics_from_ranks(rank: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), their mean R@mean, median rank MdR and mean rank MnR (1-based).

    The evaluators' report edge (metrics.jsonl, TensorBoard): recalls in percent as in the paper.
    """
    rank = np.asarray(rank)
    out = {f"R@{k}": 100.0 * recall_at(rank, k) for k in RECALL_AT}
    out["R@mean"] = float(np.mean([out[f"R@{k}"] for k in RECALL_AT]))
    out["MdR"] = float(np.median(rank) + 1)
    out["MnR"] = float(np.mean(rank) + 1)
    return out


def class_at_1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of queries whose top candidate shows the query's class, ties shared.

    scores: float[N, N] of queries against candidates that carry the same labels int[N] (query i
    and candidate i are record i). Among tied top candidates the fraction of the query's class
    counts, so a collapsed modality (all scores equal) scores chance, never a lucky hit.
    """
    return top1_agreement(scores, labels, labels)


def top1_agreement(scores: np.ndarray, query_keys, candidate_keys) -> float:
    """Fraction of queries whose top candidate carries the query's key, ties shared.

    scores: float[Nq, Nc]; query_keys: [Nq] and candidate_keys: [Nc], any comparable values (a
    class, a text). Among tied top candidates the fraction with the query's key counts.
    """
    scores = np.asarray(scores)
    query_keys, candidate_keys = np.asarray(query_keys), np.asarray(candidate_keys)
    top = scores >= scores.max(axis=1, keepdims=True)
    same = candidate_keys[None, :] == query_keys[:, None]
    return float(np.mean((top & same).sum(1) / top.sum(1)))


def retrieval_metrics(scores: np.ndarray, gt) -> dict[str, float]:
    """{R@1, R@5, R@10, R@mean, MdR, MnR} of one retrieval direction.

    scores: float[Nq, Nc] (higher = better, e.g. -volume); gt: see `gt_pairs`. For the opposite
    direction pass ``scores.T`` with the transposed ground truth.
    """
    return metrics_from_ranks(ranks(scores, gt))


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}
