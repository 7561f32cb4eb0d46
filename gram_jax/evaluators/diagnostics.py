"""Alignment diagnostics that see the volume's blind spots: sign, collapse, memorisation.

The Gram volume is unchanged when any vector flips sign (Vol(t, v, a) = Vol(t, v, -a)) and is ~0
as soon as one pair is (anti)parallel, so a model trained by the volume alone can align two
modalities up to a random sign (cosine retrieval then reads chance) or keep a modality constant
(its retrieval is chance, its volume still small). Plain retrieval cannot tell these failures from
"learned nothing"; these metrics can (docs/results.md, "Why the volume needs a symmetry breaker").

All functions take host NumPy embeddings whose row i of every modality belongs to the same record
(the positive pairs), and return flat ``{metric name: float}``:

- ``sign/<a>_<b>/neg_positive_fraction``: fraction of records whose positive pair has a negative
  cosine (about 0.5 for a random sign, 0 for a learned positive alignment);
  ``sign/<a>_<b>/mean_positive_cos``: the mean positive-pair cosine.
- ``abs/<a>2<b>/R@1`` ...: retrieval scored by |cos| (sign-invariant); far above the plain
  ``<a>2<b>`` retrieval means "aligned up to sign". With labels, ``abs_class/<a>2<b>/R@1`` is the
  same at class level (a candidate of the query's class counts as correct) and
  ``class/<a>2<b>/R@1`` the plain-cosine class level (class@1).
- ``collapse/<m>/mean_cos``: mean off-diagonal cosine (1 = every item the same vector);
  ``collapse/<m>/variance``: total variance of the unit vectors (0 = a constant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gram_jax.evaluators.ranking import prefixed, retrieval_metrics
from gram_jax.evaluators.scoring import unit_rows


def collapse_metrics(embeddings: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{modality: {'mean_cos', 'variance'}} of the unit-normalised embeddings float[N, D].

    mean_cos: mean of cos(x_i, x_j) over i != j (1 = collapsed to one vector); variance: the sum
    over dimensions of the variance of the unit vectors (0 = collapsed to a constant).
    """
    out = {}
    for m, x in embeddings.items():
        u = unit_rows(np.asarray(x, np.float64))
        n = len(u)
        total = u.sum(axis=0)
        # sum_{i != j} u_i . u_j = |sum_i u_i|^2 - sum_i |u_i|^2, without the [N, N] matrix.
        off_diagonal = total @ total - np.sum(u * u)
        out[m] = {
            "mean_cos": float(off_diagonal / max(n * (n - 1), 1)),
            "variance": float(u.var(axis=0).sum()),
        }
    return out


def positive_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64[N]: cos(a_i, b_i) of the matched rows of float[N, D] a and b."""
    a, b = (unit_rows(np.asarray(x, np.float64)) for x in (a, b))
    return np.sum(a * b, axis=-1)


def sign_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """{'neg_positive_fraction', 'mean_positive_cos'} of the positive pairs (a_i, b_i)."""
    cos = positive_cosines(a, b)
    return {
        "neg_positive_fraction": float(np.mean(cos < 0)),
        "mean_positive_cos": float(np.mean(cos)),
    }


def pair_diagnostics(
    embeddings: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Sign and sign-invariant retrieval metrics of each modality pair (module docstring).

    Args:
      embeddings: {modality: float[N, D]}, row i of every modality from record i.
      pairs: (a, b) modality pairs; both directions a->b and b->a are reported for retrieval.
      labels: optional int[N] class of each record (class-level metrics when given).
    """
    # lazy: import cycle (evaluators.retrieval imports this module at load).
    from gram_jax.evaluators.retrieval import abbreviation  # noqa: PLC0415

    out: dict[str, float] = {}
    same_class = None
    if labels is not None:
        labels = np.asarray(labels)
        same_class = labels[:, None] == labels[None, :]
    identity = np.arange(len(next(iter(embeddings.values()))))
    for a, b in pairs:
        x, y = abbreviation(a), abbreviation(b)
        out |= prefixed(f"sign/{x}_{y}", sign_metrics(embeddings[a], embeddings[b]))
        cos = (
            unit_rows(np.asarray(embeddings[a], np.float64))
            @ unit_rows(np.asarray(embeddings[b], np.float64)).T
        )
        for name, scores in ((f"{x}2{y}", cos), (f"{y}2{x}", cos.T)):
            out |= prefixed(f"abs/{name}", retrieval_metrics(np.abs(scores), identity))
            if same_class is not None:
                out |= prefixed(f"class/{name}", retrieval_metrics(scores, same_class))
                out |= prefixed(f"abs_class/{name}", retrieval_metrics(np.abs(scores), same_class))
    return out


def alignment_diagnostics(
    embeddings: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """`pair_diagnostics` plus ``collapse/<m>/{mean_cos,variance}`` of every modality."""
    out = pair_diagnostics(embeddings, pairs, labels)
    for m, metrics in collapse_metrics(embeddings).items():
        out |= prefixed(f"collapse/{m}", metrics)
    return out
