"""`prepare(config)`: the one sequence that turns an experiment config into the config a run uses.

Every entry point calls it (``gram-train``, ``gram-eval``, ``gram-rank`` and `GramInference`, the
TriDigits runner, ``bench/``), so a checkpoint is always scored under the same keys it was trained
with. The steps, in order:

1. the fidelity switch and the keys derived from others (`gram_jax.config.fidelity`);
2. validation: unknown keys, types, ranges (`gram_jax.config.validation`, `gram_jax.config.schema`);
3. the run length: ``num_epochs`` -> ``total_steps`` over the samples the data filters keep
   (only when ``count_data``: evaluation and inference do not train, so they never read the
   training annotations);
4. ``evals_per_run`` > 0: the evaluation and checkpoint cadence from the run length.

Any refusal is a `ConfigError` naming the key (or file) and what was expected; the CLIs turn it into
exit code 2 with that one line.
"""

from __future__ import annotations

import copy
import logging

import ml_collections

from data_pipelines.media import MediaError  # no decoder import: the exception type only
from gram_jax.config.fidelity import finalize_config
from gram_jax.config.validation import ConfigError, validate_config

log = logging.getLogger(__name__)


def prepare(
    config: ml_collections.ConfigDict, *, count_data: bool = True
) -> ml_collections.ConfigDict:
    """A prepared copy of `config` (the argument is left as it was); idempotent.

    Raises:
      ConfigError: a key is unknown, mistyped or out of range, the fidelity switch cannot apply, or
        (with `count_data`) the training data cannot be counted for ``num_epochs``.
    """
    config = copy.deepcopy(config)
    try:
        finalize_config(config)
        validate_config(config)
        if count_data:
            resolve_run_length(config)
        apply_evals_per_run(config)
    except ConfigError:
        raise
    except (ValueError, KeyError, FileNotFoundError, MediaError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(message) from exc
    return config


def resolve_run_length(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets ``total_steps`` from ``num_epochs`` when that is set (in place; returns `config`):
    steps = samples actually kept (after filters) // data.batch_size * epochs."""
    epochs = config.get("num_epochs")
    if not epochs:  # None or 0: total_steps as the config sets it
        return config
    # lazy: counting reads the annotations through the data pipeline (grain, media readers), which
    # `gram-train --help` and config-only tools must not import.
    from data_pipelines.pipeline import steps_per_epoch  # noqa: PLC0415

    per_epoch = steps_per_epoch(config.data)
    if per_epoch == 0:
        raise ConfigError(
            f"num_epochs={epochs}: the training file {config.data.annotations.get('train')} keeps "
            f"fewer samples than one global batch (data.batch_size={config.data.batch_size}) after "
            "the data filters (filter_audio drops records without a readable audio file)"
        )
    total = max(1, int(per_epoch * float(epochs)))
    log.info(
        "num_epochs=%g: total_steps = %d (%d global batches of %d per epoch over the kept samples)",
        float(epochs),
        total,
        per_epoch,
        config.data.batch_size,
    )
    config.total_steps = total
    return config


def apply_evals_per_run(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """With ``evals_per_run = N > 0``: ``eval_every = max(total_steps // N - 1, 1)`` and
    ``checkpoint_steps = max(total_steps // N, 1)`` (in place; returns `config`), so a run whose
    length is counted from its data evaluates as the released code does (N = 10)."""
    n = int(config.get("evals_per_run", 0) or 0)
    if n > 0:
        config.eval_every = max(config.total_steps // n - 1, 1)
        config.checkpoint_steps = max(config.total_steps // n, 1)
    return config
