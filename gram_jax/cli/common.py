"""What the console scripts share: the workdir check and ``--print_config``."""

from __future__ import annotations

import json
import logging

from absl import app


def require_workdir(workdir: str | None) -> None:
    """A usage error (exit 1 with the usage line) when a run command has no ``--workdir``."""
    if not workdir:
        raise app.UsageError("--workdir is required (except with --print_config)")


def print_prepared_config(config, *, count_data: bool = True) -> None:
    """Prints `gram_jax.config.prepare(config)` as JSON (keys sorted) on stdout.

    With `count_data`, ``num_epochs`` becomes ``total_steps`` by counting the training annotations;
    when that file is not on this machine (inspecting a paper config before fetching its data), the
    config is printed with ``total_steps`` as written and a warning on stderr says so.
    """
    from gram_jax.config import ConfigError, prepare  # noqa: PLC0415 (lazy: --help imports no JAX)

    prepared = prepare(config, count_data=False)  # a refused key fails here, not below
    try:
        if count_data:
            prepared = prepare(config, count_data=True)
    except ConfigError as exc:  # only the counting step is left to fail
        logging.getLogger("gram_jax.cli").warning(
            "total_steps not derived from num_epochs (the training data could not be counted: "
            "%s); printed as written",
            exc,
        )
    print(json.dumps(json.loads(prepared.to_json_best_effort()), indent=1, sort_keys=True))
