"""Entry point: ``python -m gram_jax.main --config experiments/<name>.py[:arg] --workdir W``.

Also installed as ``gram-train``. Config overrides use ml_collections syntax, e.g.
``--config.total_steps=100 --config.checkpoint_steps=50 --config.data.batch_size=64``. Runs under
`absl.app.run` (grain's worker processes read absl flags, stack_notes).
"""

from __future__ import annotations

import logging

from absl import app, flags

from gram_jax.config_loading import define_config_flag

FLAGS = flags.FLAGS
define_config_flag("config", "Experiment config file (experiments/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    # Imported here so that `--help` does not initialise JAX.
    from gram_jax.train import train_and_evaluate

    train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """Console script `gram-train`."""
    app.run(main)


if __name__ == "__main__":
    run()
