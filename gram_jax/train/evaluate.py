"""Evaluate a workdir's checkpoint (or ``config.model_init`` weights): what ``gram-eval`` runs.

Restores the train state of ``W/checkpoints`` (the latest step, or ``step``; with no checkpoint,
the ``config.model_init`` weights, or an error), runs the evaluators of ``config.evals`` (all, or
the chosen ones) and appends one JSON line per evaluator to ``W/metrics.jsonl`` as soon as that
evaluator finishes, so a later evaluator that fails (e.g. a dataset whose files are missing) does
not lose the results before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax

from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.config.validation import ConfigError
from gram_jax.evaluators.runner import run_evaluations
from gram_jax.train import checkpoint, metric_writers
from gram_jax.train import workdir as workdir_paths
from gram_jax.train.state import Trainer

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    config, workdir, step: int | None = None, *, evals: Sequence[str] | None = None
) -> dict[str, dict]:
    """Restores `step` (or the latest) of `workdir` and runs config.evals; returns the results.

    Args:
      config: the experiment config (prepared here, the same way ``gram-train`` prepares it).
      workdir: the run directory holding ``checkpoints/``; results go to its ``metrics.jsonl``.
      step: the checkpoint step (default: the latest).
      evals: names of ``config.evals`` entries to run (default: all of them).
    Returns:
      {eval name: {metric: value}}.
    """
    parallel.maybe_initialize_distributed(config.get("distributed"))
    config = prepare(config, count_data=False)
    if not config.evals:
        raise ConfigError("config.evals is empty: nothing to evaluate")
    if evals:
        unknown = [n for n in evals if n not in config.evals]
        if unknown:
            raise ConfigError(f"--evals {unknown}: config.evals has {sorted(config.evals)}")
    workdir = workdir_paths.resolve(workdir)  # a local folder or gs://bucket/run
    trainer = Trainer(config)
    manager = checkpoint.make_manager(checkpoint.checkpoint_dir(workdir), read_only=True)
    try:
        if manager.latest_step() is None and step is None:
            if not config.get("model_init"):
                raise FileNotFoundError(
                    f"{checkpoint.checkpoint_dir(workdir)}: no checkpoint, and config.model_init "
                    "is empty: nothing to evaluate"
                )
            state, _, source = checkpoint.restore_or_initialize(
                manager, config, trainer.abstract_state, trainer.init_state
            )
        else:
            state, _ = checkpoint.restore(manager, step, trainer.abstract_state)
            source = f"workdir:{step if step is not None else manager.latest_step()}"
    finally:
        manager.close()
    at = int(jax.device_get(state["step"]))
    log.info("evaluating %s (step %d)", source, at)

    def write(name: str, metrics: dict) -> None:
        if jax.process_index() == 0:
            record = {"step": at, "eval": name, "source": source, **metrics}
            metric_writers.append_jsonl(workdir / "metrics.jsonl", record)
            log.info("%s: %s", name, metrics)

    return run_evaluations(config, trainer.eval_model, state, names=evals, on_result=write)
