"""``gram-eval --config F.py[:arg] --workdir W [--step N] [--evals a,b]``: evaluate a checkpoint.

Restores the train state of ``W/checkpoints`` (the latest step, or ``--step``; with no checkpoint,
``config.model_init`` weights, e.g. a converted released checkpoint), runs the evaluators of
``config.evals`` (all, or those named by ``--evals``) and appends one JSON line per evaluator to
``W/metrics.jsonl`` as each finishes (`gram_jax.train.evaluate`). ``--print_config`` prints the
prepared config as JSON and exits.
"""

from __future__ import annotations

from absl import app, flags

from gram_jax.cli.common import print_prepared_config, require_workdir
from gram_jax.config.loading import define_config_flag
from gram_jax.train.metric_writers import configure_console

FLAGS = flags.FLAGS
define_config_flag("config", "Experiment config file (experiments/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (results go there too).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
flags.DEFINE_list("evals", None, "Names of config.evals entries to run (default: all).")
flags.DEFINE_bool("print_config", False, "Print the prepared config as JSON and exit.")
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)  # orbax/absl INFO lines only at --verbosity=1
    # lazy: `gram-eval --help` must not import JAX.
    from gram_jax.cli.exit_codes import run_to_exit_code  # noqa: PLC0415

    if FLAGS.print_config:
        return run_to_exit_code(
            lambda: print_prepared_config(FLAGS.config, count_data=False), "gram-eval"
        )
    require_workdir(FLAGS.workdir)
    from gram_jax.train.evaluate import evaluate_checkpoint  # noqa: PLC0415

    return run_to_exit_code(
        lambda: evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step, evals=FLAGS.evals),
        "gram-eval",
    )


def run() -> None:
    """Console script `gram-eval`."""
    app.run(main)


if __name__ == "__main__":
    run()
