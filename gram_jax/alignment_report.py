"""Retrieval table and per-modality collapse metrics of a labelled text/video/audio test set.

Used by the quickstart and the TriDigits reproduction (experiments/tridigits). Works on host
numpy embeddings ({modality: float[N, D] unit vectors} of the same N test records), so it is
independent of the model and of how the embeddings were computed.

Directions (query -> candidates, candidate j = record j):
- ``text->video+audio``: each text against every (video_j, audio_j) tuple, scored with the
  method's own tuple score (``SCORINGS``): the Gram volume for GRAM, the triangle area for
  TRIANGLE, the multilinear product for Symile, the sum of cosines for the cosine baselines;
- ``video->audio``, ``audio->video``, ``text->video``, ``text->audio``: cosine similarity.

Metrics per direction: instance recall ``R@1``/``R@5`` (the candidate of the query's own record),
``MdR`` (median rank, 1-based) and ``class@1`` (the top candidate shows the same class). TriDigits
test sets hold repeated texts (two voices of one language saying one digit share a word), so the
instance recall of text queries has an upper bound below 1; ``class@1`` has none.

Collapse metrics per modality: ``mean_cos`` (mean off-diagonal cosine; 1 = every item the same
vector) and ``variance`` (total variance of the unit vectors, 0 = collapsed to a constant).
Sign diagnostics per pair (``diagnostics_summary``): how many positive pairs point apart, and
class@1 by |cos|, which sees an alignment the volume made only up to sign
(`gram_jax.evaluators.diagnostics`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gram_jax.evaluators.diagnostics import collapse_metrics as _collapse
from gram_jax.evaluators.diagnostics import sign_metrics
from gram_jax.evaluators.diagnostics import unit as _unit

SCORINGS = ("volume", "area", "symile", "cosine")
PAIR_DIRECTIONS = (
    ("video", "audio"),
    ("audio", "video"),
    ("text", "video"),
    ("text", "audio"),
)


def scoring_for_loss(loss_name: str) -> str:
    """The tuple scoring that matches a `gram_jax.losses.LOSSES` name."""
    return {"volume": "volume", "area": "area", "symile": "symile"}.get(loss_name, "cosine")


def tuple_scores(query: np.ndarray, candidates: list[np.ndarray], scoring: str) -> np.ndarray:
    """Similarity of each query row to each candidate tuple (higher = better).

    Args:
      query: float[N, D]; candidates: list of k-1 float[M, D] (tuple j = row j of each).
      scoring: one of ``SCORINGS``.
    Returns:
      float64[N, M].
    """
    q = _unit(query)
    c = [_unit(x) for x in candidates]
    if scoring == "cosine":
        return sum(q @ x.T for x in c)
    if scoring == "symile":
        # Multilinear inner product sum_d q_d * prod_m c_m,d: Symile's score.
        prod = np.prod(np.stack(c), axis=0)
        return q @ prod.T
    if scoring in ("volume", "area"):
        import jax.numpy as jnp

        from gram_jax import volume

        others = jnp.asarray(np.stack(c), jnp.float32)
        anchor = jnp.asarray(q, jnp.float32)
        if scoring == "volume":
            vol = volume.pairwise_volume(anchor, others)
        else:
            if len(c) != 2:
                raise ValueError(f"area scoring needs exactly 2 candidate modalities, got {len(c)}")
            vol = volume.pairwise_triangle_area(anchor, others)
        return -np.asarray(vol, np.float64)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def rank_metrics(scores: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """R@1, R@5, MdR (and class@1 when labels are given) of a square score matrix.

    Row i's correct candidate is column i. Ties count against the query (pessimistic rank), so a
    collapsed modality, whose scores are all equal, gets the worst rank rather than a lucky one.
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if scores.shape != (n, n):
        raise ValueError(f"rank_metrics: expected a square score matrix, got {scores.shape}")
    own = np.diag(scores)
    ranks = (scores >= own[:, None]).sum(axis=1)  # 1-based, ties pessimistic
    out = {
        "R@1": float(np.mean(ranks <= 1)),
        "R@5": float(np.mean(ranks <= 5)),
        "MdR": float(np.median(ranks)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        best = scores.max(axis=1, keepdims=True)
        # Among the top-scoring candidates (ties), the fraction that shows the query's class.
        top = scores >= best
        out["class@1"] = float(
            np.mean((top & (labels[None, :] == labels[:, None])).sum(1) / top.sum(1))
        )
    return out


def retrieval_table(
    embeddings: Mapping[str, np.ndarray], labels: np.ndarray | None, scoring: str = "volume"
) -> dict[str, dict[str, float]]:
    """{direction: metrics} for text->video+audio (``scoring``) and the cosine pair directions."""
    table = {
        "text->video+audio": rank_metrics(
            tuple_scores(embeddings["text"], [embeddings["video"], embeddings["audio"]], scoring),
            labels,
        )
    }
    for q, c in PAIR_DIRECTIONS:
        table[f"{q}->{c}"] = rank_metrics(
            tuple_scores(embeddings[q], [embeddings[c]], "cosine"), labels
        )
    return table


def collapse_metrics(embeddings: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{modality: {'mean_cos', 'variance'}} (`gram_jax.evaluators.diagnostics.collapse_metrics`)."""
    return _collapse(embeddings)


def diagnostics_summary(embeddings: Mapping[str, np.ndarray], labels) -> dict[str, dict]:
    """Per modality pair: the fraction of positive pairs with a negative cosine, their mean
    cosine, and class@1 scored by cos and by |cos| (sign-invariant; labels needed)."""
    out = {}
    for a, b in (("text", "video"), ("text", "audio"), ("video", "audio")):
        cos = _unit(embeddings[a]) @ _unit(embeddings[b]).T
        entry = sign_metrics(embeddings[a], embeddings[b])
        if labels is not None:
            entry["class@1"] = rank_metrics(cos, labels)["class@1"]
            entry["abs_class@1"] = rank_metrics(np.abs(cos), labels)["class@1"]
        out[f"{a}-{b}"] = entry
    return out


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
    if collapse:
        lines.append(f"{'modality':<20}{'mean_cos':>9}{'variance':>9}")
        for m, v in collapse.items():
            lines.append(f"{m:<20}{v['mean_cos']:>9.3f}{v['variance']:>9.3f}")
    return "\n".join(lines)


def embed_split(encode, params, model_state, data_config, split: str):
    """Embeddings of every sample of ``split`` through the real evaluation pipeline.

    Args:
      encode: ``Trainer.encode_fn()``: (params, model_state, batch) -> (embeddings, cond, mask).
      data_config: a ``data_pipelines.config.data_config``.
    Returns:
      ({modality: float32[N, D]} in annotation order, labels int32[N] or None).
    """
    from data_pipelines.pipeline import make_eval_iterator

    chunks: dict[str, list[np.ndarray]] = {}
    labels, index = [], []
    for batch in make_eval_iterator(data_config, split, process_index=0, process_count=1):
        valid = np.asarray(batch["valid"], bool)
        embeddings, _, _ = encode(params, model_state, batch)
        for m, x in embeddings.items():
            chunks.setdefault(m, []).append(np.asarray(x, np.float32)[valid])
        index.append(np.asarray(batch["index"])[valid])
        if "label" in batch:
            labels.append(np.asarray(batch["label"])[valid])
    order = np.argsort(np.concatenate(index), kind="stable")
    out = {m: np.concatenate(v)[order] for m, v in chunks.items()}
    return out, (np.concatenate(labels)[order] if labels else None)


def report_run(config, trainer, state, workdir, *, split: str = "test", log=print) -> dict:
    """Embed ``split``, print the retrieval table, write ``report.json`` and ``embeddings.png``.

    The end-of-training report of the quickstart (and of any labelled tri-modal run). Besides
    ``split`` it reports the other labelled splits of ``config.data.annotations`` that are not
    ``train`` (TriDigits v2: ``test_seen``, held-out images with voices seen in training, and
    ``train_sample``, training records: train-split retrieval beside the held-out one).

    Args:
      config: the run config (``config.data`` is read; ``config.loss.name`` picks the scoring).
      trainer: a ``gram_jax.train.Trainer`` (its jitted ``encode_fn``).
      state: the train state dict (``params``, ``model_state``).
      workdir: where ``report.json`` and ``embeddings.png`` go.
    Returns:
      {'split', 'scoring', 'retrieval', 'collapse', 'diagnostics', 'other_splits', 'plot'}:
      retrieval and collapse of ``split`` (as `retrieval_table`, `collapse_metrics`), its
      `diagnostics_summary`, and {split: {'retrieval', 'collapse', 'diagnostics'}} of the others.
    """
    import json
    import pathlib

    from gram_jax import plots

    workdir = pathlib.Path(workdir)
    encode = trainer.encode_fn()
    scoring = scoring_for_loss(config.loss.name)

    def evaluate(name):
        embeddings, labels = embed_split(
            encode, state["params"], state["model_state"], config.data, name
        )
        return (
            embeddings,
            labels,
            {
                "retrieval": retrieval_table(embeddings, labels, scoring),
                "collapse": collapse_metrics(embeddings),
                "diagnostics": diagnostics_summary(embeddings, labels),
            },
        )

    embeddings, labels, main = evaluate(split)
    title = f"{split}: {len(labels)} records, text->video+audio scored by {scoring}"
    log(format_table(main["retrieval"], main["collapse"], title))
    log(format_diagnostics(main["diagnostics"]))
    others = {}
    for name, path in config.data.annotations.items():
        if name in (split, "train") or not path:
            continue
        _, other_labels, others[name] = evaluate(name)
        cells = "  ".join(
            f"{d} {others[name]['retrieval'][d]['class@1']:.3f}"
            for d in ("text->video", "text->audio", "video->audio")
        )
        log(f"{name} ({len(other_labels)} records) class@1: {cells}")
    plot = plots.plot_embeddings(
        embeddings, labels, workdir / "embeddings.png", title=f"{config.loss.name}, {split} split"
    )
    out = {"split": split, "scoring": scoring, **main, "other_splits": others}
    (workdir / "report.json").write_text(json.dumps(out, indent=1))
    return {**out, "plot": str(plot)}


def format_diagnostics(summary: Mapping[str, Mapping[str, float]]) -> str:
    """Text lines of `diagnostics_summary`: sign of the positive pairs, cos vs |cos| class@1."""
    lines = [f"{'pair':<20}{'neg.pos':>9}{'mean pos':>9}{'class@1':>9}{'|cos|@1':>9}"]
    for pair, v in summary.items():
        cells = [v["neg_positive_fraction"], v["mean_positive_cos"]]
        cells += [v.get("class@1", float("nan")), v.get("abs_class@1", float("nan"))]
        lines.append(f"{pair:<20}" + "".join(f"{c:>9.3f}" for c in cells))
    return "\n".join(lines)
