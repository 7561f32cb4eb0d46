"""Exit codes of the console scripts that a scheduler can act on (docs/reliability.md).

- 0 ``EXIT_OK``: finished (or a finished run restarted: nothing left to do);
- 1: an unexpected error (Python's default, with its traceback);
- 2 ``EXIT_REFUSED``: the config or workdir was refused before anything ran (a value out of range,
  a resume whose config changes a shape or data-order key, a workdir holding another run's metrics,
  a checkpoint whose data position cannot be continued with this process count, a ``gs://`` path
  without the ``gcs`` extra's clients);
- 3 ``EXIT_DIVERGED``: training diverged; the message names the last good checkpoint and the command
  to resume it with a smaller learning rate;
- 4 ``EXIT_CHECKPOINT_WRITE``: a checkpoint could not be written (disk full, permissions);
- 75 ``EXIT_PREEMPTED`` (sysexits.h ``EX_TEMPFAIL``, "try again later"): pre-empted by SIGTERM; the
  state was saved and running the same command again continues. A SLURM batch script requeues on
  it: ``srun gram-train ...; [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gram_jax.config.validation import ConfigError
from gram_jax.train.checkpoint import CheckpointWriteError, PreemptedError, ProcessCountError
from gram_jax.train.guard import DivergenceError
from gram_jax.train.workdir import MissingClientError

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_DIVERGED = 3
EXIT_CHECKPOINT_WRITE = 4
EXIT_PREEMPTED = 75


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of an expected outcome (one of the classes above), None for anything else."""
    outcomes = (
        (PreemptedError, EXIT_PREEMPTED),
        (DivergenceError, EXIT_DIVERGED),
        (ConfigError, EXIT_REFUSED),
        (ProcessCountError, EXIT_REFUSED),
        (MissingClientError, EXIT_REFUSED),
        (CheckpointWriteError, EXIT_CHECKPOINT_WRITE),
    )
    return next((code for kind, code in outcomes if isinstance(exc, kind)), None)


def run_to_exit_code(fn: Callable[[], object], program: str) -> int:
    """Runs `fn`; an expected outcome ends in one line (what happened, what to do) and its exit
    code, an unexpected error keeps its traceback (exit 1), success is 0."""
    try:
        fn()
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        logging.getLogger(program).error("%s (exit code %d)", exc, code)
        return code
    return EXIT_OK
