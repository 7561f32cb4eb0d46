"""Evaluate a workdir's checkpoint (or ``config.model_init`` weights): what ``gram-eval`` runs.

Restores the parameters of ``W/checkpoints`` (the latest step, or ``step``; with no checkpoint,
``config.resume``'s newest, then the ``config.model_init`` weights, or an error; the optimizer
state is never read nor built), runs the evaluators of ``config.evals`` (all, or
the chosen ones) and appends one JSON line per evaluator to ``W/metrics.jsonl`` as soon as that
evaluator finishes, so a later evaluator that fails (e.g. a dataset whose files are missing) does
not lose the results before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax

from gram_jax import inference, parallel
from gram_jax.config import prepare
from gram_jax.config.validation import ConfigError
from gram_jax.evaluators.model import EvalModel
from gram_jax.evaluators.runner import run_evaluations
from gram_jax.train import checkpoint, metric_writers
from gram_jax.train import workdir as workdir_paths

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
    # Evaluation reads parameters only: no train state (optimizer moments, twice the parameters
    # with Adam) is built or restored, and no parameter is initialised before being overwritten.
    eval_model = EvalModel(config, parallel.make_mesh(config.mesh))
    abstract = inference.abstract_variables(eval_model)
    directory = checkpoint.checkpoint_dir(workdir)
    manager = checkpoint.make_manager(directory, read_only=True)
    try:
        at = manager.latest_step() if step is None else int(step)
    finally:
        manager.close()
    if at is not None:
        state = checkpoint.restore_subtree(directory, at, abstract)
        source = f"workdir:{at}"
    elif config.get("resume"):
        # Another run's checkpoint directory (the resume order of gram-train): its newest step.
        state, at, source = _restore_resume(config.resume, abstract)
    elif config.get("model_init"):
        state = inference.weights_file_variables(
            workdir_paths.resolve(config.model_init), config, abstract
        )
        at, source = 0, f"model_init:{config.model_init}"
    else:
        raise FileNotFoundError(
            f"{directory}: no checkpoint, and config.model_init is empty: nothing to evaluate"
        )
    log.info("evaluating %s (step %d)", source, at)

    def write(name: str, metrics: dict) -> None:
        if jax.process_index() == 0:
            record = {"step": at, "eval": name, "source": source, **metrics}
            metric_writers.append_jsonl(workdir / "metrics.jsonl", record)
            log.info("%s: %s", name, metrics)

    return run_evaluations(config, eval_model, state, names=evals, on_result=write)


def _restore_resume(resume: str, abstract: dict) -> tuple[dict, int, str]:
    """({'params', 'model_state'}, step, source) of the newest checkpoint of ``config.resume``
    (a run directory or its ``checkpoints/``)."""
    directory = workdir_paths.resolve(resume)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"config.resume: {directory} is not a checkpoint directory")
    manager = checkpoint.make_manager(directory, read_only=True)
    try:
        at = manager.latest_step()
    finally:
        manager.close()
    if at is None:
        raise FileNotFoundError(f"config.resume: {directory} holds no checkpoint")
    return checkpoint.restore_subtree(directory, at, abstract), at, f"resume:{directory}:{at}"
