"""The model for evaluation: one object per model whose jitted encoder and matching head are built
once and reused by every evaluation, the end-of-run report and inference.

`EvalModel(config, mesh)` builds the module graph abstractly (``model.eval_dtype`` may give the
evaluation towers another matmul dtype than training; the parameters are the same), jits
``encode`` and ``match`` once, and places host batches on the mesh (padding the batch dimension
to a multiple of the batch shards). `ModelScorer` binds it to one set of parameters for the
evaluators' ``encode_fn`` / ``match_fn`` protocol (`gram_jax.evaluators.base`).

Because the jitted functions live on the `EvalModel`, a run that evaluates N times compiles each
encoder once (for each distinct batch shape), not N times.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from data_pipelines.config import TEXT_MODALITIES
from gram_jax import parallel
from gram_jax.models.gram import build_model, merge_model


def eval_model_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.model`` with ``dtype`` replaced by ``eval_dtype`` when that is set."""
    eval_dtype = model.get("eval_dtype", "")
    if not eval_dtype or eval_dtype == model.dtype:
        return model
    model = ml_collections.ConfigDict(model.to_dict())
    model.dtype = eval_dtype
    return model


def matched_probability(logits: np.ndarray) -> np.ndarray:
    """P(matched) from the matching head's two logits: float[n, 2] -> float32[n] (softmax[:, 1])."""
    logits = np.asarray(logits, np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    return probs[:, 1]


class EvalModel:
    """Jitted eval-mode encode / match of one model config on one mesh (built once).

    Attributes: ``config`` (the run config; ``model`` and ``data`` are read), ``mesh``,
    ``graphdef``, ``abstract_params`` / ``abstract_rest`` (the State templates of parameters and
    other variables).
    """

    def __init__(self, config, mesh, *, graphdef=None, abstract_params=None, abstract_rest=None):
        self.config = config
        self.mesh = mesh
        eval_model = eval_model_config(config.model)
        if graphdef is None or eval_model is not config.model:
            abstract = nnx.eval_shape(lambda: build_model(eval_model, config.seed))
            graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
            abstract_params = params if abstract_params is None else abstract_params
            abstract_rest = rest if abstract_rest is None else abstract_rest
        self.graphdef = graphdef
        self.abstract_params = abstract_params
        self.abstract_rest = abstract_rest
        self.modalities = tuple(config.model.modalities)
        template = (graphdef, abstract_params, abstract_rest)

        def encode(params, model_state, batch):
            model = merge_model(*template, params, model_state)
            # The batch's keys are static under jit: each key set compiles once, with its towers.
            out = model.encode(batch, train=False, modalities=self.batch_modalities(batch))
            return dict(out.embeddings), out.condition, out.condition_mask

        def match(params, model_state, ids, mask, cond, cond_mask):
            model = merge_model(*template, params, model_state)
            return model.match_logits(ids, mask, cond, cond_mask, train=False)

        self.encode = jax.jit(encode)
        """(params, model_state, device batch) -> ({modality: float32[B, D]}, condition
        float[B, T, H] | None, condition_mask int32[B, T] | None). Only the towers of the
        modalities whose inputs the batch holds run (`batch_modalities`), and only their
        embeddings come back; the fusion tokens need every modality of the evaluation condition
        (None otherwise)."""
        self.match = jax.jit(match)
        """(params, model_state, ids int32[n, L], mask int32[n, L], cond float[n, T, H],
        cond_mask int32[n, T]) -> logits float[n, 2] (index 1 = matched)."""

    def batch_modalities(self, batch: Mapping[str, object]) -> tuple[str, ...]:
        """The model modalities whose inputs ``batch`` holds (``<m>_ids`` for text-like ones,
        ``<m>`` otherwise), in the model's order. Raises ValueError when there is none."""
        found = tuple(
            m for m in self.modalities if (f"{m}_ids" if m in TEXT_MODALITIES else m) in batch
        )
        if not found:
            raise ValueError(
                f"encode: the batch holds no input of the model's modalities {self.modalities} "
                f"(keys: {sorted(batch)})"
            )
        return found

    def to_device(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, jax.Array], int]:
        """A host batch (every process holds all rows) -> (global arrays on the batch axes, the
        real row count n); rows are zero-padded to a multiple of the batch shards
        (`gram_jax.parallel.global_batch` with ``all_rows=True``)."""
        n = next(iter(batch.values())).shape[0]
        return parallel.global_batch(batch, self.mesh, all_rows=True), n

    def scorer(self, params, model_state, anchor: str, *, keep_match_rows: bool = True):
        """A `ModelScorer` of these parameters (one evaluation's encode_fn / match_fn)."""
        return ModelScorer(self, params, model_state, anchor, keep_match_rows=keep_match_rows)


def _gathered(x: jax.Array, n: int) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))[:n]


def trimmed_rows(valid: np.ndarray) -> int:
    """Rows of a host batch worth encoding: up to its last valid row, rounded up to a power of
    two (so a run compiles at most one more encoder shape than its full batch), at most all rows.

    bool[B] -> int. A batch with no valid row keeps one row (the contract wants an output row).
    """
    last = int(np.flatnonzero(valid)[-1]) + 1 if valid.any() else 1
    return min(1 << (last - 1).bit_length(), valid.shape[0])


def _padded(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` float[n, ...] zero-padded to ``rows`` rows."""
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)])


class ModelScorer:
    """encode_fn / match_fn for the evaluators, backed by an `EvalModel` and one set of parameters.

    encode_fn(batch) returns {modality: float32[B, D]} of the modalities whose inputs the batch
    holds (text-only class prompts run the text tower alone) and remembers, for every valid row in
    order, the anchor tokens and the fusion condition tokens, which match_fn(text_pos, data_pos)
    feeds to the matching head (probability of "matched", float32[n]). With
    ``keep_match_rows=False`` (embedding only, e.g. the end-of-run report) nothing is remembered.
    The padding rows after a batch's last valid row are not encoded (`trimmed_rows`): their
    embeddings come back as zeros, so a 4-item test set with ``eval_batch_size=64`` runs 4 rows.
    """

    def __init__(self, model: EvalModel, params, model_state, anchor: str, *, keep_match_rows=True):
        self._model = model
        self._params = params
        self._model_state = model_state
        self._anchor = anchor
        self._keep_match_rows = keep_match_rows  # False: no matching re-rank will follow
        self._rows: dict[str, list[np.ndarray]] = {}

    def encode_fn(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(batch.values())).shape[0]
        valid = np.asarray(batch["valid"], bool) if "valid" in batch else np.ones(rows, bool)
        # The padding rows at the end of the last batch are not encoded (every process holds
        # the same host batch, so all cut alike); their embeddings are returned as zeros.
        batch = {k: np.asarray(v)[: trimmed_rows(valid)] for k, v in batch.items()}
        device_batch, n = self._model.to_device(batch)
        embeddings, condition, condition_mask = self._model.encode(
            self._params, self._model_state, device_batch
        )
        out = {m: _padded(_gathered(e, n), rows) for m, e in embeddings.items()}
        valid = valid[:n]
        if self._keep_match_rows and condition is not None and f"{self._anchor}_ids" in batch:
            rows = {
                "ids": np.asarray(batch[f"{self._anchor}_ids"]),
                "mask": np.asarray(batch[f"{self._anchor}_mask"]),
                "cond": _gathered(condition, n),
                "cond_mask": _gathered(condition_mask, n),
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
        device_batch, n = self._model.to_device(batch)
        logits = self._model.match(
            self._params,
            self._model_state,
            device_batch["ids"],
            device_batch["mask"],
            device_batch["cond"],
            device_batch["cond_mask"],
        )
        return matched_probability(_gathered(logits, n))
