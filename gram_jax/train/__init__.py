"""The run: train state, the pure jitted step, the loop, the divergence guard, checkpoints.

- `state`: `Trainer` (mesh, abstract model, optimizer, shardings, the jitted step; built once per
  run) and `init_train_state`;
- `step`: the pure update step ``(state, batch) -> (state, metrics)``;
- `loop`: `train_and_evaluate(config, workdir)`;
- `guard`: which states are known good; stop or roll back on a divergence;
- `checkpoint`: orbax checkpoints of {state, data iterator, config}; `best`: the best state by a
  metric; `metric_writers`: TensorBoard events and ``metrics.jsonl``;
- `evaluate`: evaluate a workdir's checkpoint (what ``gram-eval`` runs).
"""

from __future__ import annotations

from gram_jax import lazy_exports

_EXPORTS = {
    "train_and_evaluate": "gram_jax.train.loop",
    "Trainer": "gram_jax.train.state",
    "init_train_state": "gram_jax.train.state",
    "evaluate_checkpoint": "gram_jax.train.evaluate",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
