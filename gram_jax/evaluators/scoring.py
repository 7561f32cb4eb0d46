"""Score matrices for retrieval: volume, cosine and matching re-rank (higher score = better).

All functions take host (NumPy) embeddings and return float NumPy matrices [N_query, N_candidate].
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from gram_jax import volume

SCORINGS = ("volume", "cosine", "matching")


def volume_scores(
    anchor: np.ndarray,
    others: np.ndarray,
    present: np.ndarray | None = None,
    *,
    chunk_size: int = 4096,
) -> np.ndarray:
    """-Vol(anchor_i, tuple_j): float32[Nq, Nc] through the chunked scorer (bounded memory).

    anchor: float[Nq, D]; others: float[k-1, Nc, D]; present: bool[k-1, Nc] (absent vectors are
    dropped from the Gram matrix).
    """
    chunk = max(1, min(int(chunk_size), others.shape[1]))
    vol = volume.chunked_pairwise_volume(
        jnp.asarray(anchor, jnp.float32),
        jnp.asarray(others, jnp.float32),
        chunk,
        present=None if present is None else jnp.asarray(present, bool),
    )
    return -np.asarray(vol)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)  # zero vectors (absent modalities) stay zero


def cosine_scores(
    anchor: np.ndarray, others: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """Mean over the present data modalities of cos(anchor_i, m_j): float32[Nq, Nc].

    A tuple with no present data modality scores 0 (no evidence either way).
    """
    a = _unit(np.asarray(anchor, np.float32))
    o = _unit(np.asarray(others, np.float32))
    weight = (
        np.ones(o.shape[:2], np.float32) if present is None else np.asarray(present, np.float32)
    )
    total = np.zeros((a.shape[0], o.shape[1]), np.float32)
    for m in range(o.shape[0]):
        total += (a @ o[m].T) * weight[m][None, :]
    return total / np.maximum(weight.sum(0), 1.0)[None, :]


def rerank_with_matching(
    base_scores: np.ndarray,
    match_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    top_k: int = 50,
    batch_size: int = 1024,
) -> np.ndarray:
    """Re-score the top_k candidates of each query with match_fn: float64[Nq, Nc].

    match_fn(query_idx int[n], cand_idx int[n]) -> float[n] (e.g. the matching head's probability
    of "match"), called on batches of at most batch_size pairs. The result ranks the top_k
    candidates of each row by match score, all of them above every other candidate; the other
    candidates keep their base-score order below them (so MdR/MnR stay meaningful). The released
    code instead sets every non-candidate to 0, i.e. ties them (and with candidates scoring 0).
    """
    base = np.asarray(base_scores, np.float64)
    nq, nc = base.shape
    k = min(int(top_k), nc)
    if k <= 0:
        raise ValueError(f"top_k: expected a positive int, got {top_k}")
    top = (
        np.argpartition(-base, k - 1, axis=1)[:, :k] if k < nc else np.tile(np.arange(nc), (nq, 1))
    )
    qi = np.repeat(np.arange(nq), k)
    ci = top.reshape(-1)
    probs = np.empty(qi.shape[0], np.float64)
    for start in range(0, qi.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        out = np.asarray(match_fn(qi[sl], ci[sl]), np.float64).reshape(-1)
        if out.shape[0] != qi[sl].shape[0]:
            raise ValueError(
                f"match_fn: returned {out.shape[0]} scores for {qi[sl].shape[0]} pairs"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("match_fn: returned non-finite scores")
        probs[sl] = out
    # Shift the base scores strictly below the lowest match score.
    result = base - base.max() + probs.min() - 1.0
    result[qi, ci] = probs
    return result
