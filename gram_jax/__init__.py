"""gram_jax: GRAM multimodal alignment in JAX/Flax.

The public API, imported lazily (PEP 562) so that `import gram_jax` stays cheap and submodules can
import each other without cycles through this package:

- training: `train_and_evaluate`, `Trainer`, `make_optimizer`, `make_mesh`;
- model: `GramModel`, `model_config`;
- math and losses: `pairwise_volume`, `gram_volume`, `chunked_pairwise_volume`, `alignment_score`,
  `volume_contrastive_loss`, `LOSSES`,
  `Temperature`;
- evaluation: `RetrievalEvaluator`, `ZeroShotClassifier`, `run_evaluations`.
"""

from __future__ import annotations

import importlib
import sys

_EXPORTS = {
    "train_and_evaluate": "gram_jax.train.loop",
    "Trainer": "gram_jax.train.state",
    "make_optimizer": "gram_jax.optim",
    "make_mesh": "gram_jax.parallel",
    "GramModel": "gram_jax.models.gram",
    "model_config": "gram_jax.models.gram",
    "pairwise_volume": "gram_jax.volume",
    "gram_volume": "gram_jax.volume",
    "chunked_pairwise_volume": "gram_jax.volume",
    "alignment_score": "gram_jax.volume",
    "volume_contrastive_loss": "gram_jax.losses",
    "LOSSES": "gram_jax.losses",
    "Temperature": "gram_jax.models.temperature",
    "RetrievalEvaluator": "gram_jax.evaluators",
    "ZeroShotClassifier": "gram_jax.evaluators",
    "run_evaluations": "gram_jax.evaluators.runner",
}

__all__ = sorted(_EXPORTS)


def lazy_exports(package: str, exports: dict[str, str]):
    """PEP 562 hooks of a package whose public names load on first use: returns (__getattr__,
    __dir__); `exports` maps each name to the module that defines it. A loaded name is cached on
    the package, so the import runs once."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
