"""Everything about a run's config, in one package.

- `loading`: ``path/to/config.py[:arg]`` specs, the argument parser, the ``--config`` flag;
- `defaults`: the trainer's own sections (``model`` and ``data`` defaults live with their code);
- `schema`: the one table of allowed values of every numeric or enumerated key;
- `validation`: unknown keys, types and ranges; `ConfigError`;
- `fidelity`: the one switch that reproduces the released code, and the derived keys;
- `resume`: whether a workdir's checkpoints can continue under a new config;
- `preparation`: `prepare`, the one sequence every entry point runs (fidelity -> validation ->
  run length).

Exports are lazy (PEP 562) so that ``gram-train --help`` imports neither JAX nor the data pipeline.
"""

from __future__ import annotations

from gram_jax import lazy_exports

_EXPORTS = {
    "prepare": "gram_jax.config.preparation",
    "resolve_run_length": "gram_jax.config.preparation",
    "ConfigError": "gram_jax.config.validation",
    "validate_config": "gram_jax.config.validation",
    "load_config": "gram_jax.config.loading",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
