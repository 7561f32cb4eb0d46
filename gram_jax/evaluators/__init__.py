"""The one home of evaluation.

Modules:
  base.py            the Evaluator protocol; `collect` (valid rows of evaluation batches)
  scoring.py         the scoring registry: volume, area, symile, cosine; the matching re-rank
  ranking.py         the one ranking: pessimistic ranks, recalls (fractions), MdR/MnR, class@1
  retrieval.py       `RetrievalEvaluator` (both directions, modality pairs, 1 - GRAM)
  classification.py  `ZeroShotClassifier` (top-1/top-5, mAP)
  runner.py          `run_evaluations`: config.evals -> evaluators fed by the jitted model
  report.py          `report_run`: the end-of-run retrieval table, collapse metrics and report.json
  plots.py           `plot_embeddings`: a shared 2-D PCA of every modality
  model.py           `EvalModel`: the jitted eval-mode encode / match of one model, built once;
                     `ModelScorer`: its encode_fn / match_fn for one set of parameters
  diagnostics.py     sign, collapse and memorisation diagnostics (the volume's blind spots)

Each evaluator has ``run(encode_fn, batches, match_fn=None) -> dict[str, float]`` (base.Evaluator);
the metric functions (`retrieval_metrics`, `classification_metrics`, ...) are pure NumPy. The
runner, report and plots are imported from their modules (they pull in the model side and
matplotlib, which the metric functions do not need).
"""

from gram_jax.evaluators.base import Collected, Evaluator, collect
from gram_jax.evaluators.classification import (
    ZeroShotClassifier,
    average_precision,
    classification_metrics,
    mean_average_precision,
)
from gram_jax.evaluators.ranking import (
    class_at_1,
    gt_pairs,
    metrics_from_ranks,
    ranks,
    recall_at,
    retrieval_metrics,
)
from gram_jax.evaluators.retrieval import RetrievalEvaluator, RetrievalLayout
from gram_jax.evaluators.scoring import (
    SCORINGS,
    TUPLE_SCORINGS,
    area_scores,
    cosine_scores,
    rerank_with_matching,
    scoring_for_loss,
    symile_scores,
    tuple_scores,
    unit_rows,
    volume_scores,
)

__all__ = [
    "SCORINGS",
    "TUPLE_SCORINGS",
    "Collected",
    "Evaluator",
    "RetrievalEvaluator",
    "RetrievalLayout",
    "ZeroShotClassifier",
    "area_scores",
    "average_precision",
    "class_at_1",
    "classification_metrics",
    "collect",
    "cosine_scores",
    "gt_pairs",
    "mean_average_precision",
    "metrics_from_ranks",
    "ranks",
    "recall_at",
    "rerank_with_matching",
    "retrieval_metrics",
    "scoring_for_loss",
    "symile_scores",
    "tuple_scores",
    "unit_rows",
    "volume_scores",
]
