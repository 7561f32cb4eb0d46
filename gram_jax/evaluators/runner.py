"""Runs the evaluators of ``config.evals`` on a train state: builds the evaluators, feeds them the
evaluation batches, and gives them an encoder and a matching scorer backed by the jitted model.
The end-of-run report (report.py) embeds its split through the same loop (`global_batches`,
`ModelScorer`).

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
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines.config import TEXT_MODALITIES, data_config
from data_pipelines.media.text import Tokenizer
from data_pipelines.pipeline import make_eval_iterator
from data_pipelines.transforms import placeholder_batch
from gram_jax import parallel
from gram_jax.evaluators.classification import ZeroShotClassifier
from gram_jax.evaluators.retrieval import RetrievalEvaluator
from gram_jax.modalities import data_modalities

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
        ids, mask = Tokenizer().encode(list(prompts), max_len)
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


class ModelScorer:
    """encode_fn / match_fn for the evaluators, backed by the trainer's jitted functions.

    encode_fn(batch) returns {modality: float32[B, D]} and remembers, for every valid row in
    order, the anchor tokens and the fusion condition tokens, which match_fn(text_pos, data_pos)
    feeds to the matching head (probability of "matched", float32[n]). With
    ``keep_match_rows=False`` (embedding only, e.g. the end-of-run report) nothing is remembered.
    """

    def __init__(self, trainer, state, anchor: str, *, keep_match_rows: bool = True):
        self._trainer = trainer
        self._params = state["params"]
        self._model_state = state["model_state"]
        self._encode = trainer.encode_fn()
        self._match = trainer.match_fn()
        self._anchor = anchor
        self._keep_match_rows = keep_match_rows  # False: no matching re-rank will follow
        self._rows: dict[str, list[np.ndarray]] = {}

    def _to_device(self, batch: Mapping[str, np.ndarray]):
        sharding = self._trainer.batch_sharding
        divisor = parallel.batch_divisor(self._trainer.mesh)
        n = next(iter(batch.values())).shape[0]
        pad = (-n) % divisor  # evaluation batches may not split evenly over the batch axes
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            if pad:
                value = np.concatenate([value, np.zeros((pad, *value.shape[1:]), value.dtype)])
            out[key] = jax.make_array_from_callback(
                value.shape, sharding, lambda index, v=value: v[index]
            )
        return out, n

    def _complete(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch`` plus zero inputs for the model modalities it lacks (e.g. a batch of class
        prompts has text only): the jitted encoder runs every tower; those outputs are unused."""
        model_modalities = self._trainer.config.model.modalities
        missing = [
            m for m in model_modalities if (f"{m}_ids" if m in TEXT_MODALITIES else m) not in batch
        ]
        if not missing:
            return dict(batch)
        n = next(iter(batch.values())).shape[0]
        return {**placeholder_batch(self._trainer.config.data, missing, n), **batch}

    def encode_fn(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = self._complete(batch)
        device_batch, n = self._to_device(batch)
        embeddings, condition, condition_mask = self._encode(
            self._params, self._model_state, device_batch
        )
        out = {
            m: np.asarray(multihost_utils.process_allgather(e, tiled=True))[:n]
            for m, e in embeddings.items()
        }
        valid = np.asarray(batch["valid"], bool) if "valid" in batch else np.ones(n, bool)
        if self._keep_match_rows and condition is not None and f"{self._anchor}_ids" in batch:
            rows = {
                "ids": np.asarray(batch[f"{self._anchor}_ids"]),
                "mask": np.asarray(batch[f"{self._anchor}_mask"]),
                "cond": np.asarray(multihost_utils.process_allgather(condition, tiled=True))[:n],
                "cond_mask": np.asarray(
                    multihost_utils.process_allgather(condition_mask, tiled=True)
                )[:n],
            }
            for key, value in rows.items():
                self._rows.setdefault(key, []).append(value[valid])
        return out

    def match_fn(self, text_pos: np.ndarray, data_pos: np.ndarray) -> np.ndarray:
        if not self._keep_match_rows:
            raise ValueError("matching re-rank: this ModelScorer keeps no rows (keep_match_rows)")
        if not self._rows:
            raise ValueError("matching re-rank: the model has no matching head (condition tokens)")
        rows = {k: np.concatenate(v) for k, v in self._rows.items()}
        batch = {
            "ids": rows["ids"][text_pos],
            "mask": rows["mask"][text_pos],
            "cond": rows["cond"][data_pos],
            "cond_mask": rows["cond_mask"][data_pos],
        }
        device_batch, n = self._to_device(batch)
        logits = self._match(
            self._params,
            self._model_state,
            device_batch["ids"],
            device_batch["mask"],
            device_batch["cond"],
            device_batch["cond_mask"],
        )
        logits = np.asarray(multihost_utils.process_allgather(logits, tiled=True), np.float32)[:n]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        return probs[:, 1]


def run_evaluations(config, trainer, state) -> dict[str, dict[str, float]]:
    """{eval name: {metric: value}} for every entry of ``config.evals``."""
    results = {}
    for name, ev in config.evals.items():
        ev = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)
        evaluator = build_evaluator(name, ev, config)
        data = eval_data_config(config, ev)
        scorer = ModelScorer(trainer, state, config.loss.anchor)
        batches = global_batches(data, ev.get("split", "test"))
        results[name] = evaluator.run(scorer.encode_fn, batches, scorer.match_fn)
    return results
