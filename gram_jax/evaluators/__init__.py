"""Evaluators: retrieval (volume, cosine, matching re-rank) and zero-shot classification.

Each evaluator has ``run(encode_fn, batches, match_fn=None) -> dict[str, float]`` (base.Evaluator);
the metric functions (`retrieval_metrics`, `classification_metrics`, ...) are pure NumPy.
"""

from gram_jax.evaluators.base import Collected, Evaluator, collect
from gram_jax.evaluators.classification import (
    ZeroShotClassifier,
    average_precision,
    classification_metrics,
    mean_average_precision,
)
from gram_jax.evaluators.ranking import gt_pairs, metrics_from_ranks, ranks, retrieval_metrics
from gram_jax.evaluators.retrieval import RetrievalEvaluator, RetrievalLayout
from gram_jax.evaluators.scoring import cosine_scores, rerank_with_matching, volume_scores

__all__ = [
    "Collected",
    "Evaluator",
    "RetrievalEvaluator",
    "RetrievalLayout",
    "ZeroShotClassifier",
    "average_precision",
    "classification_metrics",
    "collect",
    "cosine_scores",
    "gt_pairs",
    "mean_average_precision",
    "metrics_from_ranks",
    "ranks",
    "rerank_with_matching",
    "retrieval_metrics",
    "volume_scores",
]
