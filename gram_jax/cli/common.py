"""What the console scripts share: the workdir check and ``--print_config``."""

from __future__ import annotations

import json

from absl import app


def require_workdir(workdir: str | None) -> None:
    """A usage error (exit 1 with the usage line) when a run command has no ``--workdir``."""
    if not workdir:
        raise app.UsageError("--workdir is required (except with --print_config)")


def print_prepared_config(config, *, count_data: bool = True) -> None:
    """Prints `gram_jax.config.prepare(config)` as JSON (keys sorted) on stdout."""
    from gram_jax.config import prepare  # noqa: PLC0415 (lazy: --help must not import JAX)

    prepared = prepare(config, count_data=count_data)
    print(json.dumps(json.loads(prepared.to_json_best_effort()), indent=1, sort_keys=True))
