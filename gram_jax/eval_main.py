"""Entry point: ``python -m gram_jax.eval_main --config F.py[:arg] --workdir W [--step N]``.

Also installed as ``gram-eval``. Restores the train state of ``W/checkpoints`` (the latest step,
or ``--step``; with no checkpoint, ``config.model_init`` weights or, failing those, an error), runs
every evaluator of ``config.evals`` and appends one JSON line per evaluator to ``W/metrics.jsonl``.
"""

from __future__ import annotations

import logging
import pathlib

from absl import app, flags

from gram_jax.config_loading import define_config_flag
from gram_jax.metric_writers import configure_console

FLAGS = flags.FLAGS
define_config_flag("config", "Experiment config file (experiments/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (results go there too).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate_checkpoint(config, workdir, step: int | None = None) -> dict:
    """Restores `step` (or the latest) of `workdir` and runs config.evals; returns the results."""
    # lazy: `gram-eval --help` must not import JAX (all of these import it).
    import jax  # noqa: PLC0415

    from gram_jax import checkpoint, metric_writers, parallel  # noqa: PLC0415
    from gram_jax.config_validation import validate_config  # noqa: PLC0415
    from gram_jax.evaluators.runner import run_evaluations  # noqa: PLC0415
    from gram_jax.fidelity import finalize_config  # noqa: PLC0415
    from gram_jax.train import Trainer  # noqa: PLC0415

    parallel.maybe_initialize_distributed(config.get("distributed"))
    finalize_config(config)
    validate_config(config)
    if not config.evals:
        raise ValueError("config.evals is empty: nothing to evaluate")
    workdir = pathlib.Path(workdir).absolute()
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
    logging.info("evaluating %s (step %d)", source, at)
    results = run_evaluations(config, trainer, state)
    if jax.process_index() == 0:
        for name, metrics in results.items():
            record = {"step": at, "eval": name, "source": source, **metrics}
            metric_writers.append_jsonl(workdir / "metrics.jsonl", record)
            logging.info("%s: %s", name, metrics)
    return results


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)  # orbax/absl INFO lines only at --verbosity=1
    evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)


def run() -> None:
    """Console script `gram-eval`."""
    app.run(main)


if __name__ == "__main__":
    run()
