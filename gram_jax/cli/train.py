"""``gram-train --config experiments/<name>.py[:arg] --workdir W``: train (and evaluate) a config.

Config overrides use ml_collections syntax, e.g. ``--config.total_steps=100
--config.checkpoint_steps=50 --config.data.batch_size=64``. ``--print_config`` prints the prepared
config (what the fidelity switch and the derived keys make of it) as JSON and exits; no workdir is
needed. Runs under `absl.app.run` (grain's worker processes read absl flags). ``--verbosity=1``
shows the INFO lines of orbax, clu and absl; the default shows our progress lines, warnings and
summaries.

Exit codes for schedulers (2 = refused config, 75 = pre-empted, requeue): `gram_jax.cli.exit_codes`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from gram_jax.cli.common import print_prepared_config, require_workdir
from gram_jax.config.loading import define_config_flag
from gram_jax.train.metric_writers import configure_console

FLAGS = flags.FLAGS
define_config_flag("config", "Experiment config file (experiments/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and metrics.")
flags.DEFINE_bool("print_config", False, "Print the prepared config as JSON and exit.")
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)
    # lazy: `gram-train --help` must not import JAX (exit_codes and the loop both import it).
    from gram_jax.cli.exit_codes import run_to_exit_code  # noqa: PLC0415

    if FLAGS.print_config:
        return run_to_exit_code(lambda: print_prepared_config(FLAGS.config), "gram-train")
    require_workdir(FLAGS.workdir)
    from gram_jax.train.loop import train_and_evaluate  # noqa: PLC0415

    return run_to_exit_code(
        lambda: train_and_evaluate(FLAGS.config, FLAGS.workdir, command=sys.argv), "gram-train"
    )


def run() -> None:
    """Console script `gram-train`."""
    app.run(main)


if __name__ == "__main__":
    run()
