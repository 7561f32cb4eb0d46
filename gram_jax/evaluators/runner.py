"""Runs the evaluators of ``config.evals`` on a train state: builds the evaluators, feeds them the
evaluation batches, and gives them an encoder and a matching scorer backed by the jitted model.
The end-of-run report (report.py) embeds its split through the same loop (`global_batches`,
`EvalModel.scorer`).

``config.evals`` maps a name to a dict:

- ``type``: ``'retrieval'`` (`gram_jax.evaluators.RetrievalEvaluator`) or ``'classification'``
  (`gram_jax.evaluators.ZeroShotClassifier`).
- ``split``: the annotation split of ``config.data.annotations`` to evaluate (default ``'test'``).
- ``data``: optional overrides of ``config.data`` for this evaluation (e.g. another dataset, its
  frame count, ``caption_mode``).
- ``modalities``: the data modalities of the tuple (default: the model's, minus the anchor, in
  Gram order).
- retrieval: ``scorings`` (subset of `scoring.SCORINGS`: volume, area, symile, cosine,
  matching), ``top_k`` (50), ``chunk_size``, ``modality_pairs``, ``match_batch_size``,
  ``require``, ``captions`` ('all' | 'first'), ``diagnostics`` (True: sign, |cos| and collapse
  metrics, diagnostics.py), ``label_key`` (class-level diagnostics).
- classification: ``prompts`` (one text per class, in class-id order) or ``prompts_file`` (a JSON
  list of them), ``label_key`` ('label'), ``scoring`` (a `scoring.TUPLE_SCORINGS` name, default
  'volume'), ``chunk_size``, ``protocol`` ('per_item', default: argmin over the prompts per item;
  'per_class': the released protocol, prompts from the items' captions, no ``prompts``),
  ``rerank_top_k`` ('per_class': items re-scored per class by the matching head; 0 = none, the
  released code 50), ``match_batch_size``.

Every process iterates its own shard of the evaluation batches; the rows of all processes are
gathered into one host batch per step (`multihost_utils.process_allgather`), so each evaluator sees
the whole set, in the same order, on every process.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines.config import data_config
from data_pipelines.media.text import from_data_config as tokenizer_for
from data_pipelines.pipeline import make_eval_iterator
from gram_jax.evaluators.classification import ZeroShotClassifier
from gram_jax.evaluators.model import EvalModel
from gram_jax.evaluators.retrieval import RetrievalEvaluator
from gram_jax.models.modalities import data_modalities

_RETRIEVAL_KEYS = (
    "scorings",
    "top_k",
    "chunk_size",
    "modality_pairs",
    "match_batch_size",
    "require",
    "captions",
    "diagnostics",
    "label_key",
)
_CLASSIFICATION_KEYS = (
    "label_key",
    "scoring",
    "chunk_size",
    "protocol",
    "rerank_top_k",
    "match_batch_size",
    "prompts_file",
)
_COMMON_KEYS = ("type", "split", "data", "modalities", "prompts")


def eval_data_config(config, ev: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """``config.data`` with the ``data`` overrides of one ``config.evals`` entry applied."""
    data = config.data.to_dict()
    overrides = dict(ev.get("data", {}) or {})
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data_config(**data)


def build_evaluator(name: str, ev: Mapping[str, Any], config):
    """The evaluator object of ``config.evals[name]``; errors name the key."""
    kind = ev.get("type")
    anchor = config.loss.anchor
    modalities = ev.get("modalities") or data_modalities(
        {m: None for m in config.model.modalities}, anchor
    )
    allowed = _COMMON_KEYS + (_RETRIEVAL_KEYS if kind == "retrieval" else _CLASSIFICATION_KEYS)
    unknown = sorted(set(ev) - set(allowed))
    if unknown:
        raise ValueError(f"config.evals.{name}: unknown keys {unknown}; allowed {sorted(allowed)}")
    if kind == "retrieval":
        kwargs = {k: ev[k] for k in _RETRIEVAL_KEYS if k in ev}
        for key in ("scorings", "require"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return RetrievalEvaluator(anchor=anchor, modalities=tuple(modalities), **kwargs)
    if kind == "classification":
        kwargs = {k: ev[k] for k in _CLASSIFICATION_KEYS if k in ev and k != "prompts_file"}
        prompts = _class_prompts(name, ev)
        if ev.get("protocol", "per_item") == "per_class":
            if prompts:
                raise ValueError(
                    f"config.evals.{name}: protocol 'per_class' takes the prompts from the "
                    "items' captions (the released protocol); remove prompts / prompts_file"
                )
            return ZeroShotClassifier(anchor=anchor, modalities=tuple(modalities), **kwargs)
        if not prompts:
            raise ValueError(
                f"config.evals.{name}.prompts: one text per class is needed (or prompts_file)"
            )
        max_len = int(config.data.text_max_len[anchor])
        ids, mask = tokenizer_for(config.data).encode(list(prompts), max_len)
        return ZeroShotClassifier(
            prompts={f"{anchor}_ids": ids, f"{anchor}_mask": mask},
            anchor=anchor,
            modalities=tuple(modalities),
            **kwargs,
        )
    raise ValueError(
        f"config.evals.{name}.type: expected 'retrieval' or 'classification', got {kind!r}"
    )


def _class_prompts(name: str, ev: Mapping[str, Any]) -> list[str]:
    """The class prompts of a classification entry: ``prompts``, or the JSON list of strings in
    ``prompts_file`` (one per class id, in order); [] when neither is given."""
    if ev.get("prompts") and ev.get("prompts_file"):
        raise ValueError(f"config.evals.{name}: give prompts or prompts_file, not both")
    if not ev.get("prompts_file"):
        return list(ev.get("prompts") or [])
    path = pathlib.Path(ev["prompts_file"])
    if not path.is_file():
        raise FileNotFoundError(f"config.evals.{name}.prompts_file: {path} does not exist")
    prompts = json.loads(path.read_text())
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(
            f"config.evals.{name}.prompts_file: {path} must hold a JSON list of class names"
        )
    return prompts


def global_batches(data: ml_collections.ConfigDict, split: str) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation batches of ``split``: this process's shard of each batch, gathered over all
    processes, so every process sees the whole batch (the one loop over the evaluation pipeline)."""
    iterator = make_eval_iterator(
        data, split, process_index=jax.process_index(), process_count=jax.process_count()
    )
    for batch in iterator:
        if jax.process_count() == 1:
            yield dict(batch)
        else:
            yield {
                k: np.asarray(v)
                for k, v in multihost_utils.process_allgather(dict(batch), tiled=True).items()
            }


def run_evaluations(
    config,
    model: EvalModel,
    state: Mapping[str, Any],
    *,
    names: Sequence[str] | None = None,
    on_result: Callable[[str, dict], None] | None = None,
) -> dict[str, dict[str, float]]:
    """{eval name: {metric: value}} for the entries of ``config.evals`` (all, or `names`).

    Args:
      model: the `EvalModel` (its jitted functions are reused across calls).
      state: a mapping with ``params`` and ``model_state`` (a train state, or parameters only).
      names: evaluate only these entries, in this order (an unknown name is an error naming the
        entries there are).
      on_result: called with (name, metrics) as soon as each evaluator finishes, so a caller can
        write each result before the next evaluator starts.
    """
    chosen = list(config.evals) if names is None else list(names)
    unknown = [n for n in chosen if n not in config.evals]
    if unknown:
        raise ValueError(f"evaluators {unknown}: config.evals has {sorted(config.evals)}")
    results = {}
    for name in chosen:
        ev = config.evals[name]
        ev = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)
        evaluator = build_evaluator(name, ev, config)
        data = eval_data_config(config, ev)
        scorer = model.scorer(state["params"], state["model_state"], config.loss.anchor)
        batches = global_batches(data, ev.get("split", "test"))
        results[name] = evaluator.run(scorer.encode_fn, batches, scorer.match_fn)
        if on_result is not None:
            on_result(name, results[name])
    return results
