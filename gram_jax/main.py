"""Entry point: ``python -m gram_jax.main --config experiments/<name>.py[:arg] --workdir W``.

Also installed as ``gram-train``. Config overrides use ml_collections syntax, e.g.
``--config.total_steps=100 --config.checkpoint_steps=50 --config.data.batch_size=64``. Runs under
`absl.app.run` (grain's worker processes read absl flags, stack_notes). ``--verbosity=1`` shows the
INFO lines of orbax, clu and absl; the default shows our progress lines, warnings and summaries.

Exit codes for schedulers (75 = pre-empted, requeue): `gram_jax.exit_codes`.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags

from gram_jax.config_loading import define_config_flag
from gram_jax.metric_writers import configure_console

FLAGS = flags.FLAGS
define_config_flag("config", "Experiment config file (experiments/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)
    # lazy: `gram-train --help` must not import JAX (exit_codes and train both import it).
    from gram_jax.exit_codes import exit_code_for  # noqa: PLC0415
    from gram_jax.train import train_and_evaluate  # noqa: PLC0415

    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir, command=sys.argv)
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise  # unexpected: keep the traceback (exit 1)
        # Expected outcomes end in one line naming what happened and what to do.
        logging.getLogger("gram_jax.main").error("%s (exit code %d)", exc, code)
        return code
    return 0


def run() -> None:
    """Console script `gram-train`."""
    app.run(main)


if __name__ == "__main__":
    run()
