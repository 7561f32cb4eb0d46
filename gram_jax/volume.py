"""The Gramian volume: pure, jit- and vmap-able math on embeddings.

Conventions (paper Sec. 3.1, Eq. 1-2):

* ``Vol(w_1..w_k) = sqrt(det G)`` with ``G_pq = <w_p, w_q>``: the k-dimensional volume of the
  parallelotope the vectors span. For unit vectors it lies in [0, 1]; for k = 2 it is |sin theta|.
* Compute dtype: float32 whatever the input dtype (bf16/f16 inputs are upcast *before* any dot
  product, because a bf16 Gram entry carries ~1e-3 error, which is ~20 % of the small volumes of
  aligned tuples); float64 inputs stay float64 (only possible under ``jax_enable_x64``, used by the
  finite-difference tests). Every matmul runs at ``Precision.HIGHEST`` so TF32/bf16 passes on GPU do
  not creep in.
* Safety: determinants and squared distances are clamped at 0, and the square root has a custom JVP
  whose slope is capped at ``1 / (2 sqrt(SQRT_GRAD_FLOOR))``; volumes are finite with finite
  gradients for identical, collinear and rank-deficient tuples. A zero-norm vector is linearly
  dependent on anything, so a tuple containing one has volume 0 (value and gradient finite).
* Missing modalities: ``present[p, j] = False`` drops vector p of tuple j from the Gram matrix (the
  volume of the remaining vectors); no vector is ever substituted.

Public API: ``gram_volume``, ``pairwise_volume``, ``chunked_pairwise_volume``, ``matched_volume``,
``alignment_score``, ``triangle_area``, ``pairwise_triangle_area``, ``safe_sqrt``, ``stack_others``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST

# Below this squared value the derivative of safe_sqrt stops growing (slope <= 5e5): a squared
# volume of 1e-12 is a volume of 1e-6, far below float32 resolution of the Gram entries (~1e-7
# absolute on entries near 1), so the cap never changes a gradient that float32 could resolve.
SQRT_GRAD_FLOOR = 1e-12

# A vector whose component orthogonal to the preceding ones is below this fraction of its norm
# (squared: 1e-12) counts as linearly dependent: float32 round-off leaves residuals of ~1e-7 of the
# norm for an exactly dependent vector, and such a residual has no meaningful direction.
DEPENDENCE_TOL = 1e-12

Others = jax.Array | Sequence[jax.Array]


@jax.custom_jvp
def safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt(max(x, 0)) with a finite derivative everywhere.

    The derivative is ``1 / (2 sqrt(max(x, SQRT_GRAD_FLOOR)))`` for x > 0 and 0 for x <= 0 (the
    clamped region is flat), so gradients at volume 0 are finite (usually exactly 0, because the
    squared volume is stationary there).
    """
    return jnp.sqrt(jnp.maximum(x, 0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    slope = 0.5 / jnp.sqrt(jnp.maximum(x, SQRT_GRAD_FLOOR))
    return safe_sqrt(x), jnp.where(x > 0, slope * dx, jnp.zeros_like(dx))


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """float32, or float64 when an input is float64 (x64 mode); never a 16-bit float."""
    for a in arrays:
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"volume inputs must be floating point arrays, got dtype {a.dtype}")
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _rowdot(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise dot product over the last axis (elementwise products, exact-ish in float32)."""
    return jnp.sum(a * b, axis=-1)


def stack_others(others: Others, name: str = "others") -> jax.Array:
    """The k-1 vectors of each tuple as one array: float[k-1, B2, D] (k >= 2) from that array or
    from a sequence of k-1 float[B2, D]; raises a ValueError naming `name` on any other shape."""
    if isinstance(others, (list, tuple)):
        if not others:
            raise ValueError(f"{name}: expected at least one [B2, D] array, got an empty sequence")
        shapes = {tuple(o.shape) for o in others}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(
                f"{name}: expected k-1 arrays of one shape [B2, D], got shapes {shapes}"
            )
        return jnp.stack([jnp.asarray(o) for o in others])
    others = jnp.asarray(others)
    if others.ndim != 3 or others.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [k-1, B2, D] with k >= 2, got {others.shape}")
    return others


def _check_pairwise(anchor: jax.Array, others: jax.Array, present) -> jax.Array | None:
    if anchor.ndim != 2:
        raise ValueError(f"anchor: expected shape [B1, D], got {anchor.shape}")
    if others.shape[-1] != anchor.shape[-1]:
        raise ValueError(
            f"others: last axis (D) must equal anchor's D={anchor.shape[-1]}, got {others.shape}"
        )
    if present is None:
        return None
    present = jnp.asarray(present)
    if present.shape != others.shape[:2] or present.dtype != jnp.bool_:
        raise ValueError(
            f"present: expected bool[k-1, B2] = bool{list(others.shape[:2])}, "
            f"got {present.dtype}{list(present.shape)}"
        )
    return present


# ---------------------------------------------------------------------------------------------
# Determinant of Gram matrices (the definition)
# ---------------------------------------------------------------------------------------------


def gram_determinant(gram: jax.Array) -> jax.Array:
    """det of symmetric PSD Gram matrices [..., k, k] -> [...], clamped at 0, finite gradients.

    Unrolled LDL^T elimination (k is static and small): each pivot is the squared distance of one
    vector to the span of the previous ones. A pivot below ``DEPENDENCE_TOL`` times its diagonal
    entry (dependent vector, zero vector, or negative round-off) is set to 0 and its column is
    not used for elimination, so no division by ~0 occurs. LAPACK ``det`` instead returns negative
    or NaN values on 40-60 % of rank-deficient inputs and its gradient is NaN there (measured).
    """
    k = gram.shape[-1]
    diag = [gram[..., p, p] for p in range(k)]
    # Lower triangle only: low[r][c] for c <= r.
    low = [[gram[..., r, c] for c in range(r + 1)] for r in range(k)]
    det = jnp.ones_like(diag[0])
    for p in range(k):
        pivot = low[p][p]
        dependent = pivot <= DEPENDENCE_TOL * diag[p]
        pivot = jnp.where(dependent, 0.0, pivot)
        inv = jnp.where(dependent, 0.0, 1.0 / jnp.where(dependent, 1.0, pivot))
        det = det * pivot
        for r in range(p + 1, k):
            factor = low[r][p] * inv
            for c in range(p + 1, r + 1):
                low[r][c] = low[r][c] - factor * low[c][p]
    return det


def _mask_gram(gram: jax.Array, present: jax.Array) -> jax.Array:
    """Replace rows/columns of absent vectors by identity ones: det = det of the present block."""
    k = gram.shape[-1]
    both = present[..., :, None] & present[..., None, :]
    return jnp.where(both, gram, jnp.eye(k, dtype=gram.dtype))


@jax.jit
def gram_volume(vectors: jax.Array, present: jax.Array | None = None) -> jax.Array:
    """Volume of each tuple: sqrt(det(V V^T)) for vectors [..., k, D] -> [...] (float32/64).

    Args:
      vectors: float[..., k, D], any float dtype (computed in float32, see module docstring).
      present: optional bool[..., k]; False drops that vector from the Gram matrix.
    """
    vectors = jnp.asarray(vectors)
    if vectors.ndim < 2:
        raise ValueError(f"vectors: expected shape [..., k, D], got {vectors.shape}")
    x = vectors.astype(compute_dtype(vectors))
    gram = jnp.einsum("...pd,...qd->...pq", x, x, precision=HIGHEST)
    if present is not None:
        present = jnp.asarray(present)
        if present.shape != vectors.shape[:-1] or present.dtype != jnp.bool_:
            raise ValueError(
                f"present: expected bool{list(vectors.shape[:-1])}, "
                f"got {present.dtype}{list(present.shape)}"
            )
        gram = _mask_gram(gram, present)
    return safe_sqrt(gram_determinant(gram))


# ---------------------------------------------------------------------------------------------
# Anchor-vs-tuple volume matrix
# ---------------------------------------------------------------------------------------------


def orthonormalise_tuples(
    others: jax.Array, present: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Modified Gram-Schmidt on each data tuple, in vector space.

    Args:
      others: float[m, B2, D] (already in the compute dtype); tuple j is others[:, j].
      present: optional bool[m, B2].
    Returns:
      basis: [m, B2, D], orthonormal directions per tuple; rows of dependent or absent vectors
        are 0.
      tuple_volume: [B2], Vol(tuple j) (present vectors only; 1 for an empty tuple).

    Working on the vectors (not on their Gram matrix) keeps residual norms accurate to ~1e-7 of the
    vector norm even for near-aligned tuples, where Gram-space elimination cancels digits.
    """
    basis: list[jax.Array] = []
    tuple_volume = jnp.ones(others.shape[1], others.dtype)
    for p in range(others.shape[0]):
        x = others[p]
        residual = x
        for q in basis:
            residual = residual - _rowdot(residual, q)[:, None] * q
        res_sq = _rowdot(residual, residual)
        dependent = res_sq <= DEPENDENCE_TOL * _rowdot(x, x)
        norm = safe_sqrt(res_sq)
        direction = residual / jnp.where(dependent, 1.0, norm)[:, None]
        keep = ~dependent if present is None else (~dependent & present[p])
        basis.append(jnp.where(keep[:, None], direction, 0.0))
        factor = norm if present is None else jnp.where(present[p], norm, 1.0)
        tuple_volume = tuple_volume * factor
    return jnp.stack(basis), tuple_volume


def _pairwise_schur(anchor: jax.Array, others: jax.Array, present) -> jax.Array:
    """Vol(t_i, X_j) = Vol(X_j) * dist(t_i, span X_j): k-1 matmuls + one elementwise pass."""
    basis, tuple_volume = orthonormalise_tuples(others, present)
    m, b2, d = basis.shape
    # The k-1 projections as one [B1, D] x [D, (k-1) B2] matmul (better device utilisation than
    # k-1 small ones); the squares are summed in the same fused elementwise pass.
    proj = jnp.matmul(anchor, basis.reshape(m * b2, d).T, precision=HIGHEST)
    proj = proj.reshape(anchor.shape[0], m, b2)
    dist_sq = _rowdot(anchor, anchor)[:, None] - jnp.sum(proj * proj, axis=1)
    return tuple_volume[None, :] * safe_sqrt(dist_sq)


def _pairwise_det_block(anchor: jax.Array, others: jax.Array, present) -> jax.Array:
    """Materialise the [B1, B2, k, k] Gram tensor of one block and take safe determinants."""
    b1, b2 = anchor.shape[0], others.shape[1]
    tt = jnp.broadcast_to(_rowdot(anchor, anchor)[:, None], (b1, b2))
    cross = jnp.einsum("id,mjd->ijm", anchor, others, precision=HIGHEST)  # [B1, B2, m]
    inner = jnp.einsum("pjd,qjd->jpq", others, others, precision=HIGHEST)  # [B2, m, m]
    top = jnp.concatenate([tt[..., None], cross], axis=-1)  # [B1, B2, k]
    rest = jnp.concatenate([cross[..., :, None], jnp.broadcast_to(inner, (b1, *inner.shape))], -1)
    gram = jnp.concatenate([top[..., None, :], rest], axis=-2)  # [B1, B2, k, k]
    if present is not None:
        full = jnp.concatenate([jnp.ones((1, b2), bool), present]).T  # [B2, k]
        gram = _mask_gram(gram, jnp.broadcast_to(full, (b1, b2, full.shape[-1])))
    return safe_sqrt(gram_determinant(gram))


def _map_candidate_chunks(fn, anchor, others, present, chunk_size: int) -> jax.Array:
    """Apply fn(anchor, others_chunk, present_chunk) -> [B1, c] over candidate chunks (lax.map).

    B2 is zero-padded up to a multiple of chunk_size (zero vectors have a defined volume of 0) and
    the padding is sliced off; peak memory is that of one chunk plus the [B1, B2] output.
    """
    m, b2, d = others.shape
    if chunk_size <= 0:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size}")
    n_chunks = -(-b2 // chunk_size)
    pad = n_chunks * chunk_size - b2
    others = jnp.pad(others, ((0, 0), (0, pad), (0, 0)))
    chunks = others.reshape(m, n_chunks, chunk_size, d).transpose(1, 0, 2, 3)
    if present is None:
        out = lax.map(lambda o: fn(anchor, o, None), chunks)
    else:
        present = jnp.pad(present, ((0, 0), (0, pad)), constant_values=True)
        pchunks = present.reshape(m, n_chunks, chunk_size).transpose(1, 0, 2)
        out = lax.map(lambda op: fn(anchor, op[0], op[1]), (chunks, pchunks))
    # out: [n_chunks, B1, chunk] -> [B1, B2]
    return out.transpose(1, 0, 2).reshape(anchor.shape[0], -1)[:, :b2]


def _default_det_chunk(b1: int, k: int) -> int:
    # Bound the materialised [B1, chunk, k, k] Gram block to about 2^24 entries (64 MiB float32).
    return max(1, (1 << 24) // max(1, b1 * k * k))


@functools.partial(jax.jit, static_argnames=("method", "chunk_size"))
def pairwise_volume(
    anchor: jax.Array,
    others: Others,
    *,
    method: str = "schur",
    present: jax.Array | None = None,
    chunk_size: int | None = None,
) -> jax.Array:
    """Volume matrix V[i, j] = Vol(anchor_i, others[0, j], ..., others[k-2, j]).

    Args:
      anchor: float[B1, D] (any float dtype; computed in float32).
      others: float[k-1, B2, D] or a sequence of k-1 float[B2, D]; k >= 2. A data tuple shares j.
      method: 'schur' (default): orthonormalise each tuple once, then
        Vol(t_i, X_j) = Vol(X_j) * dist(t_i, span X_j) from k-1 [B1, D] x [D, B2] matmuls; never
        builds a [B1, B2, k, k] tensor. 'det': the definition, determinants of the explicit
        [B1, chunk, k, k] Gram blocks (slower, more memory; used as a cross-check).
      present: optional bool[k-1, B2]; False drops that vector from tuple j's Gram matrix.
      chunk_size: candidates per chunk (bounded memory via lax.map). None: unchunked for 'schur',
        an automatic chunk bounding the Gram block to ~64 MiB for 'det'.
    Returns:
      float32[B1, B2] (float64 for float64 inputs), volumes >= 0.
    """
    others = stack_others(others)
    anchor = jnp.asarray(anchor)
    present = _check_pairwise(anchor, others, present)
    dtype = compute_dtype(anchor, others)
    anchor, others = anchor.astype(dtype), others.astype(dtype)
    if method == "schur":
        if chunk_size is None or chunk_size >= others.shape[1]:
            return _pairwise_schur(anchor, others, present)
        return _map_candidate_chunks(_pairwise_schur, anchor, others, present, chunk_size)
    if method == "det":
        if chunk_size is None:
            chunk_size = _default_det_chunk(anchor.shape[0], others.shape[0] + 1)
        if chunk_size >= others.shape[1]:
            return _pairwise_det_block(anchor, others, present)
        return _map_candidate_chunks(_pairwise_det_block, anchor, others, present, chunk_size)
    raise ValueError(f"method: expected 'schur' or 'det', got {method!r}")


@functools.partial(jax.jit, static_argnames=("chunk_size", "method"))
def chunked_pairwise_volume(
    anchor: jax.Array,
    others: Others,
    chunk_size: int,
    *,
    present: jax.Array | None = None,
    method: str = "schur",
) -> jax.Array:
    """pairwise_volume over candidate chunks of chunk_size tuples: float32[B1, B2].

    For retrieval over very large candidate sets: the intermediates (orthonormal bases, projections)
    exist for one chunk at a time; B2 need not be a multiple of chunk_size.
    """
    others = stack_others(others)
    anchor = jnp.asarray(anchor)
    present = _check_pairwise(anchor, others, present)
    dtype = compute_dtype(anchor, others)
    anchor, others = anchor.astype(dtype), others.astype(dtype)
    fn = {"schur": _pairwise_schur, "det": _pairwise_det_block}.get(method)
    if fn is None:
        raise ValueError(f"method: expected 'schur' or 'det', got {method!r}")
    return _map_candidate_chunks(fn, anchor, others, present, int(chunk_size))


# ---------------------------------------------------------------------------------------------
# Matched tuples: the 1 - GRAM alignment score
# ---------------------------------------------------------------------------------------------


@jax.jit
def matched_volume(
    anchor: jax.Array, others: Others, present: jax.Array | None = None
) -> jax.Array:
    """Vol(anchor_b, others[0, b], ...) for matched tuples: float32[B] (the diagonal, O(B) work).

    anchor: float[B, D]; others: float[k-1, B, D] or k-1 float[B, D]; present: bool[k-1, B].
    """
    others = stack_others(others)
    anchor = jnp.asarray(anchor)
    present = _check_pairwise(anchor, others, present)
    if others.shape[1] != anchor.shape[0]:
        raise ValueError(
            f"matched tuples need B2 == B1: anchor {anchor.shape}, others {others.shape}"
        )
    vectors = jnp.concatenate([anchor[None], others]).transpose(1, 0, 2)  # [B, k, D]
    if present is not None:
        present = jnp.concatenate([jnp.ones((1, anchor.shape[0]), bool), present]).T
    return gram_volume(vectors, present)


@jax.jit
def alignment_score(
    anchor: jax.Array, others: Others, present: jax.Array | None = None
) -> jax.Array:
    """The paper's 1 - GRAM score of matched tuples: 1 - Vol, float32[B] (1 = perfectly aligned).

    For unit vectors it lies in [0, 1]; average it over an evaluation set for the alignment metric.
    """
    return 1.0 - matched_volume(anchor, others, present)


# ---------------------------------------------------------------------------------------------
# TRIANGLE (Cicchetti et al., NeurIPS 2025): area of the triangle with the three endpoints
# ---------------------------------------------------------------------------------------------


def _triangle_from_squares(area2x_sq: jax.Array, form: str) -> jax.Array:
    """area2x_sq = (2 * area)^2 -> the requested form."""
    if form == "area":
        return 0.5 * safe_sqrt(area2x_sq)
    if form == "reference":
        # The TRIANGLE code trains on (|u|^2 |w|^2 - (u.w)^2) / 2 = 2 * area^2 (no square root).
        return 0.5 * jnp.maximum(area2x_sq, 0.0)
    raise ValueError(f"form: expected 'area' or 'reference', got {form!r}")


@functools.partial(jax.jit, static_argnames=("form",))
def triangle_area(
    anchor: jax.Array, a: jax.Array, b: jax.Array, *, form: str = "area"
) -> jax.Array:
    """Area of the triangle with vertices anchor, a, b (matched rows): float[..., D] x3 -> [...].

    With u = anchor - a, w = anchor - b: area = 0.5 * sqrt(|u|^2 |w|^2 - (u.w)^2), i.e. half the
    2-volume spanned by the two edge vectors. form='reference' returns 2 * area^2, the quantity
    the released TRIANGLE code uses as its loss logit. 0 for coincident or collinear endpoints.
    """
    dtype = compute_dtype(anchor, a, b)
    t, a, b = (jnp.asarray(x).astype(dtype) for x in (anchor, a, b))
    u, w = t - a, t - b
    uu, ww, uw = _rowdot(u, u), _rowdot(w, w), _rowdot(u, w)
    return _triangle_from_squares(uu * ww - uw * uw, form)


@functools.partial(jax.jit, static_argnames=("form",))
def pairwise_triangle_area(
    anchor: jax.Array, a: Others, b: jax.Array | None = None, *, form: str = "area"
) -> jax.Array:
    """Triangle areas of every anchor_i with every pair (a_j, b_j): [B1, D], [B2, D] -> [B1, B2].

    ``a`` may also hold both data modalities (``b`` None): an array [2, B2, D] or a pair of [B2, D]
    arrays, the same ``others`` layout as pairwise_volume with k = 3.
    Uses 2 * area = |b_j - a_j| * dist(t_i, line through a_j and b_j): per-tuple work once, then two
    [B1, D] x [D, B2] matmuls (t.a_j and t.e_j with e_j the unit edge direction) and an elementwise
    pass, the same structure as the Schur volume.
    """
    if b is None:
        pair = stack_others(a, "a")
        if pair.shape[0] != 2:
            raise ValueError(f"a: a triangle needs exactly 2 data modalities, got {pair.shape}")
        a, b = pair[0], pair[1]
    anchor, a, b = jnp.asarray(anchor), jnp.asarray(a), jnp.asarray(b)
    if anchor.ndim != 2 or a.ndim != 2 or a.shape != b.shape or a.shape[1] != anchor.shape[1]:
        raise ValueError(
            f"expected anchor [B1, D] and a, b [B2, D]; got {anchor.shape}, {a.shape}, {b.shape}"
        )
    dtype = compute_dtype(anchor, a, b)
    t, a, b = (jnp.asarray(x).astype(dtype) for x in (anchor, a, b))
    edge = b - a
    edge_sq = _rowdot(edge, edge)
    degenerate = edge_sq <= DEPENDENCE_TOL * (_rowdot(a, a) + _rowdot(b, b))
    direction = jnp.where(
        degenerate[:, None], 0.0, edge / jnp.where(degenerate, 1.0, safe_sqrt(edge_sq))[:, None]
    )
    ta = jnp.matmul(t, a.T, precision=HIGHEST)
    te = jnp.matmul(t, direction.T, precision=HIGHEST)
    ae = _rowdot(a, direction)
    # |t - a|^2 - ((t - a).e)^2 = squared distance of t to the line through a and b.
    dist_sq = _rowdot(t, t)[:, None] - 2.0 * ta + _rowdot(a, a)[None, :] - (te - ae[None, :]) ** 2
    return _triangle_from_squares(edge_sq[None, :] * jnp.maximum(dist_sq, 0.0), form)
