"""Retrieval table and per-modality collapse metrics of a labelled text/video/audio test set.

Used by the quickstart and the TriDigits reproduction (experiments/tridigits). The tables work on
host numpy embeddings ({modality: float[N, D] unit vectors} of the same N test records), so they
are independent of the model and of how the embeddings were computed; `report_run` embeds a split
through the evaluators' runner and writes the report.

Directions (query -> candidates, candidate j = record j):
- ``text->video+audio``: each text against every (video_j, audio_j) tuple, scored with the
  method's own tuple score (`scoring.scoring_for_loss`, one of `scoring.TUPLE_SCORINGS`): the Gram
  volume for GRAM, the triangle area for TRIANGLE, the multilinear product for Symile, the mean of
  the cosines (ranks as their sum) for the cosine baselines;
- ``video->audio``, ``audio->video``, ``text->video``, ``text->audio``: cosine similarity.

Metrics per direction, from the one ranking of ranking.py (recalls as fractions 0..1 here; the
evaluators write percent to metrics.jsonl): instance recall ``R@1``/``R@5`` (the candidate of the
query's own record), ``MdR`` (median rank, 1-based) and ``class@1`` (the top candidate shows the
same class). TriDigits
test sets hold repeated texts (two voices of one language saying one digit share a word), so the
instance recall of text queries has an upper bound below 1; ``class@1`` has none.

The printed table (`format_distinct`) shows what means something with repeated items (TriDigits:
~40 distinct texts and recordings in a split of hundreds of records): for every direction, class@1
and text identity (``text@1``, where both sides carry a text) counted over distinct queries, and
the number of distinct queries (`distinct.split_metrics`; ``report.json``: ``distinct``). The
instance recalls stay in ``report.json`` (``retrieval``) and are not printed.

Collapse metrics per modality: ``mean_cos`` (mean off-diagonal cosine; 1 = every item the same
vector) and ``variance`` (total variance of the unit vectors, 0 = collapsed to a constant).
Sign diagnostics per pair (``diagnostics_summary``): how many positive pairs point apart, and
class@1 by |cos|, which sees an alignment the volume made only up to sign (diagnostics.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import jax
import numpy as np
from etils import epath

from gram_jax.evaluators import diagnostics, distinct
from gram_jax.evaluators.base import collect
from gram_jax.evaluators.model import EvalModel
from gram_jax.evaluators.plots import plot_embeddings
from gram_jax.evaluators.ranking import class_at_1, ranks, recall_at
from gram_jax.evaluators.runner import eval_data_config, global_batches
from gram_jax.evaluators.scoring import scoring_for_loss, tuple_scores, unit_rows
from gram_jax.models.modalities import data_modalities
from gram_jax.train import workdir as workdir_paths

PAIR_DIRECTIONS = (
    ("video", "audio"),
    ("audio", "video"),
    ("text", "video"),
    ("text", "audio"),
)


def rank_metrics(scores: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """R@1, R@5 (fractions), MdR (and class@1 when labels are given) of a square score matrix.

    Row i's correct candidate is column i. Ties count against the query (pessimistic rank,
    `ranking.ranks`), so a collapsed modality, whose scores are all equal, gets the worst rank.
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if scores.shape != (n, n):
        raise ValueError(f"rank_metrics: expected a square score matrix, got {scores.shape}")
    rank = ranks(scores, np.arange(n))
    out = {"R@1": recall_at(rank, 1), "R@5": recall_at(rank, 5), "MdR": float(np.median(rank + 1))}
    if labels is not None:
        out["class@1"] = class_at_1(scores, labels)
    return out


def retrieval_table(
    embeddings: Mapping[str, np.ndarray], labels: np.ndarray | None, scoring: str = "volume"
) -> dict[str, dict[str, float]]:
    """{direction: metrics} for text->video+audio (``scoring``) and the cosine pair directions.

    embeddings: {modality: float[N, D]} (normalised here, in float64); labels: int[N] or None.
    """
    unit = {m: unit_rows(np.asarray(x, np.float64)) for m, x in embeddings.items()}
    table = {
        "text->video+audio": rank_metrics(
            tuple_scores(unit["text"], np.stack([unit["video"], unit["audio"]]), scoring), labels
        )
    }
    for q, c in PAIR_DIRECTIONS:
        table[f"{q}->{c}"] = rank_metrics(tuple_scores(unit[q], unit[c][None], "cosine"), labels)
    return table


def collapse_metrics(embeddings: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{modality: {'mean_cos', 'variance'}} (`diagnostics.collapse_metrics`)."""
    return diagnostics.collapse_metrics(embeddings)


def diagnostics_summary(embeddings: Mapping[str, np.ndarray], labels) -> dict[str, dict]:
    """Per modality pair: the fraction of positive pairs with a negative cosine, their mean
    cosine, and class@1 scored by cos and by |cos| (sign-invariant; needs labels)."""
    out = {}
    for a, b in (("text", "video"), ("text", "audio"), ("video", "audio")):
        entry = diagnostics.sign_metrics(embeddings[a], embeddings[b])
        if labels is not None:
            cos = tuple_scores(
                unit_rows(np.asarray(embeddings[a], np.float64)),
                unit_rows(np.asarray(embeddings[b], np.float64))[None],
                "cosine",
            )
            entry["class@1"] = class_at_1(cos, labels)
            entry["abs_class@1"] = class_at_1(np.abs(cos), labels)
        out[f"{a}-{b}"] = entry
    return out


def format_diagnostics(summary: Mapping[str, Mapping[str, float]]) -> str:
    """Text lines of `diagnostics_summary`: sign of the positive pairs, cos vs |cos| class@1."""
    lines = [f"{'pair':<20}{'neg.pos':>9}{'mean pos':>9}{'class@1':>9}{'|cos|@1':>9}"]
    for pair, v in summary.items():
        cells = [v["neg_positive_fraction"], v["mean_positive_cos"]]
        cells += [v.get("class@1", float("nan")), v.get("abs_class@1", float("nan"))]
        lines.append(f"{pair:<20}" + "".join(f"{c:>9.3f}" for c in cells))
    return "\n".join(lines)


def format_table(table: Mapping[str, Mapping[str, float]], collapse=None, title: str = "") -> str:
    """A fixed-width text table of ``retrieval_table`` (and ``collapse_metrics``) output."""
    cols = ["R@1", "R@5", "MdR", "class@1"]
    lines = [title] if title else []
    lines.append(f"{'direction':<20}" + "".join(f"{c:>9}" for c in cols))
    for direction, metrics in table.items():
        cells = "".join(
            f"{'-':>9}" if c not in metrics else f"{metrics[c]:>9.{1 if c == 'MdR' else 3}f}"
            for c in cols
        )
        lines.append(f"{direction:<20}{cells}")
    lines.extend(_collapse_lines(collapse, 20))
    return "\n".join(lines)


def _collapse_lines(collapse, width: int) -> list[str]:
    """The ``collapse_metrics`` rows of a printed table (none without them); `width`: its first
    column's."""
    if not collapse:
        return []
    lines = [f"{'modality':<{width}}{'mean_cos':>9}{'variance':>9}"]
    for m, v in collapse.items():
        lines.append(f"{m:<{width}}{v['mean_cos']:>9.3f}{v['variance']:>9.3f}")
    return lines


# What the TriDigits splits hold, for the printed titles (other datasets' splits print by name).
SPLIT_LABELS = {
    "test": "held-out images, unseen voices",
    # A seen voice's recording of a digit is the very clip the model trained on.
    "test_seen": "held-out images, training recordings",
    "train_sample": "training records",
}


def format_distinct(metrics: Mapping[str, Mapping], collapse=None, title: str = "") -> str:
    """A fixed-width text table of `distinct.split_metrics` (class@1, text@1, distinct queries of
    every direction; '-' where text identity is undefined) and ``collapse_metrics``."""
    lines = [title] if title else []
    lines.append(f"{'direction':<26}{'class@1':>9}{'text@1':>9}{'queries':>9}")
    for direction, m in metrics.items():
        if not isinstance(m, Mapping):
            continue
        text = f"{m['text@1']:>9.3f}" if "text@1" in m else f"{'-':>9}"
        lines.append(f"{direction:<26}{m['class@1']:>9.3f}{text}{m['queries']:>9d}")
    lines.extend(_collapse_lines(collapse, 26))
    return "\n".join(lines)


def split_distinct(config, split: str, embeddings, labels) -> dict | None:
    """`distinct.split_metrics` of a split whose annotation records carry texts (``desc``), else
    None (the records are in annotation order, as `embed_split` returns the embeddings)."""
    path = config.data.annotations.get(split)
    if labels is None or not path or not str(path).endswith(".json"):
        return None
    records = json.loads(epath.Path(path).read_text(encoding="utf-8"))
    if not isinstance(records, list) or len(records) != len(labels):
        return None
    if not all(isinstance(r, Mapping) and "desc" in r and "id" in r for r in records):
        return None
    return distinct.split_metrics(embeddings, labels, distinct.record_identities(records))


def embed_split(
    config, model: EvalModel, state, split: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Embeddings and labels of every record of ``split``, through the evaluators' loop.

    Uses `runner.global_batches` and `EvalModel.scorer`, the path of ``config.evals``.
    Returns:
      ({modality: float32[N, D]} in Gram order and annotation order, labels int[N]).
    """
    anchor = config.loss.anchor
    modalities = (anchor, *data_modalities({m: None for m in config.model.modalities}, anchor))
    scorer = model.scorer(state["params"], state["model_state"], anchor, keep_match_rows=False)
    batches = global_batches(eval_data_config(config, {}), split)
    col = collect(scorer.encode_fn, batches, modalities, label_key="label")
    order = np.argsort(col.index, kind="stable")
    return {m: col.embeddings[m][order] for m in modalities}, np.asarray(col.label)[order]


def report_run(config, model: EvalModel, state, workdir, *, split: str = "test", log=print) -> dict:
    """Embed ``split``, print the retrieval table, write ``report.json`` and ``embeddings.png``.

    The end-of-training report of the quickstart (and of any labelled tri-modal run). Every
    process must call it (the embedding gathers over processes); process 0 logs and writes.
    Besides ``split`` it reports every other split of ``config.data.annotations`` except
    ``train`` (TriDigits v2: ``test_seen``, held-out images paired with training recordings (a
    seen voice has one clip per digit, the one trained on), and ``train_sample``, training
    records: train-split retrieval beside the held-out one).

    Args:
      config: the run config (``config.data`` is read; ``config.loss.name`` picks the scoring).
      model: the run's `EvalModel` (its jitted encoder).
      state: the train state dict (``params``, ``model_state``).
      workdir: where ``report.json`` and ``embeddings.png`` go.
    Returns:
      {'split', 'scoring', 'retrieval', 'collapse', 'diagnostics', 'distinct', 'other_splits',
      'plot': path or None off process 0}: retrieval, collapse, `diagnostics_summary` and
      `split_distinct` (None without texts in the annotations) of ``split``, and {split:
      {'retrieval', 'collapse', 'diagnostics', 'distinct'}} of the others.
    """
    workdir = workdir_paths.resolve(workdir)  # a local folder or gs://bucket/run
    scoring = scoring_for_loss(config.loss.name)

    def evaluate(name):
        embeddings, labels = embed_split(config, model, state, name)
        return (
            embeddings,
            labels,
            {
                "retrieval": retrieval_table(embeddings, labels, scoring),
                "collapse": collapse_metrics(embeddings),
                "diagnostics": diagnostics_summary(embeddings, labels),
                "distinct": split_distinct(config, name, embeddings, labels),
            },
        )

    embeddings, labels, main = evaluate(split)
    others = {}
    for name, path in config.data.annotations.items():
        if name not in (split, "train") and path:
            others[name] = evaluate(name)
    out = {"split": split, "scoring": scoring, **main}
    out["other_splits"] = {name: o[2] for name, o in others.items()}
    if jax.process_index() != 0:
        return {**out, "plot": None}

    def label(name):
        return f"{name} ({SPLIT_LABELS[name]})" if name in SPLIT_LABELS else name

    title = f"{label(split)}: {len(labels)} records"
    if out["distinct"] is not None:
        log(format_distinct(out["distinct"], out["collapse"], title + "; chance class@1 0.1"))
    else:
        log(format_table(out["retrieval"], out["collapse"], f"{title}, tuples by {scoring}"))
    log(format_diagnostics(out["diagnostics"]))
    for name, (_, other_labels, other) in others.items():
        table = other["distinct"] or other["retrieval"]
        cells = "  ".join(
            f"{d} {table[d]['class@1']:.3f}"
            for d in ("text->video", "text->audio", "video->audio", "audio->video")
        )
        log(f"{label(name)}, {len(other_labels)} records, class@1: {cells}")
    plot = plot_embeddings(
        embeddings, labels, workdir / "embeddings.png", title=f"{config.loss.name}, {split} split"
    )
    (workdir / "report.json").write_text(json.dumps(out, indent=1))
    return {**out, "plot": str(plot)}
