"""The one scoring registry: score matrices of queries against data tuples (higher = better).

Tuple scorings (``TUPLE_SCORINGS``), each ``fn(anchor, others, present=None) -> float[Nq, Nc]``
with anchor float[Nq, D], others float[k-1, Nc, D] (tuple j = row j of every modality) and
present bool[k-1, Nc] (False: that vector of tuple j is absent):

  volume   -Vol(anchor_i, tuple_j), the Gram volume (GRAM); absent vectors leave the Gram matrix
  area     -area of the triangle (anchor_i, a_j, b_j) (TRIANGLE); exactly 2 data modalities
  symile   sum_d anchor_d * prod_m tuple_m,d, the multilinear inner product (Symile)
  cosine   mean over the present data modalities of cos(anchor_i, m_j) (the cosine baselines)

``matching`` is a re-rank, not a tuple score: the top_k candidates of the volume scores are
re-scored by the matching head (`rerank_with_matching`). ``SCORINGS`` lists all five names.

Zero vectors: `unit_rows` leaves a zero row zero (no NaN). A zero vector thus has cosine 0 with
everything, and a tuple holding one spans volume 0, the rule of gram_jax/volume.py ("a zero-norm
vector is linearly dependent on anything").
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from gram_jax import volume


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (float[..., D]) scaled to unit norm; zero rows stay zero.

    Computed in the input's float dtype, at least float32 (float64 stays float64).
    """
    x = np.asarray(x)
    x = x.astype(np.promote_types(x.dtype, np.float32), copy=False)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _weights(others: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """float[k-1, Nc] weight of every data vector (1 present, 0 absent)."""
    if present is None:
        return np.ones(others.shape[:2], others.dtype)
    present = np.asarray(present, bool)
    if present.shape != others.shape[:2]:
        raise ValueError(f"present: expected bool{list(others.shape[:2])}, got {present.shape}")
    return present.astype(others.dtype)


def _require_all_present(name: str, present: np.ndarray | None) -> None:
    if present is not None and not np.all(present):
        raise ValueError(
            f"scoring {name!r}: {int(np.size(present) - np.sum(present))} data vectors are absent "
            "(present == False) and this scoring has no rule for a missing modality; use 'volume' "
            "or 'cosine', or require the modalities (retrieval `require`)"
        )


def volume_scores(
    anchor: np.ndarray,
    others: np.ndarray,
    present: np.ndarray | None = None,
    *,
    chunk_size: int | None = None,
) -> np.ndarray:
    """-Vol(anchor_i, tuple_j): float32[Nq, Nc] (module docstring for the arguments).

    chunk_size: candidate tuples per chunk of the scorer (bounded memory); None or >= Nc scores
    all candidates at once.
    """
    vol = volume.pairwise_volume(
        jnp.asarray(anchor, jnp.float32),
        jnp.asarray(others, jnp.float32),
        present=None if present is None else jnp.asarray(present, bool),
        chunk_size=None if chunk_size is None else max(1, int(chunk_size)),
    )
    return -np.asarray(vol)


def area_scores(
    anchor: np.ndarray, others: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """-Area(anchor_i, a_j, b_j) of the TRIANGLE objective: float32[Nq, Nc]; others [2, Nc, D]."""
    _require_all_present("area", present)
    if np.shape(others)[0] != 2:
        raise ValueError(
            f"scoring 'area': needs exactly 2 data modalities, got {np.shape(others)[0]}"
        )
    area = volume.pairwise_triangle_area(
        jnp.asarray(anchor, jnp.float32), jnp.asarray(others, jnp.float32)
    )
    return -np.asarray(area)


def symile_scores(
    anchor: np.ndarray, others: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """Symile's multilinear inner product of the unit vectors: float[Nq, Nc].

    Computed in the inputs' float dtype (at least float32).
    """
    _require_all_present("symile", present)
    prod = np.prod(unit_rows(others), axis=0)
    return unit_rows(anchor) @ prod.T


def cosine_scores(
    anchor: np.ndarray, others: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """Mean over the present data modalities of cos(anchor_i, m_j): float[Nq, Nc].

    Computed in the inputs' float dtype (at least float32). A tuple with no present data modality
    scores 0 (no evidence either way).
    """
    a = unit_rows(anchor)
    o = unit_rows(others)
    weight = _weights(o, present)
    total = np.zeros((a.shape[0], o.shape[1]), np.result_type(a, o))
    for m in range(o.shape[0]):
        total += (a @ o[m].T) * weight[m][None, :]
    return total / np.maximum(weight.sum(0), 1.0)[None, :]


TUPLE_SCORINGS: dict[str, Callable[..., np.ndarray]] = {
    "volume": volume_scores,
    "area": area_scores,
    "symile": symile_scores,
    "cosine": cosine_scores,
}
SCORINGS = (*TUPLE_SCORINGS, "matching")


def tuple_scores(
    anchor: np.ndarray,
    others: np.ndarray,
    scoring: str,
    present: np.ndarray | None = None,
    *,
    chunk_size: int | None = None,
) -> np.ndarray:
    """The ``scoring`` entry of `TUPLE_SCORINGS` (chunk_size goes to 'volume' only)."""
    if scoring not in TUPLE_SCORINGS:
        raise ValueError(f"scoring must be one of {tuple(TUPLE_SCORINGS)}, got {scoring!r}")
    others = np.asarray(others)
    if scoring == "volume":
        return volume_scores(anchor, others, present, chunk_size=chunk_size)
    return TUPLE_SCORINGS[scoring](anchor, others, present)


def scoring_for_loss(loss_name: str) -> str:
    """The tuple scoring that matches a `gram_jax.losses.LOSSES` name (cosine for the rest)."""
    return loss_name if loss_name in ("volume", "area", "symile") else "cosine"


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
