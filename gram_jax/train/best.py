"""Keep the best train state by an evaluation metric, apart from the final one (``--save_best``).

``config.best_metric = "<eval name>/<metric>"`` (e.g. ``"reference_clips/t2d/R@1"``) and
``config.best_mode = "max" | "min"``: after every evaluation (``eval_every`` and the end of the
run), a state whose metric beats the best so far is saved to ``W/best/checkpoints/<step>/`` (one
kept) and recorded in ``W/best/best.json`` (``{"metric", "mode", "value", "step"}``). ``W/best`` is
a workdir of its own: ``gram-eval --workdir W/best`` evaluates the best state. The final state stays
in ``W/checkpoints``; the end-of-run summary names both.

The released GRAM code selects its reported numbers this way (best test T2D R@1 over periodic
evaluations, its ``--save_best``); a number chosen on the test split is optimistic, which is why
the final state is always reported beside it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
from etils import epath

from gram_jax.train import checkpoint
from gram_jax.train import workdir as workdir_paths

log = logging.getLogger(__name__)


class BestCheckpoint:
    """Tracks config.best_metric over evaluations; saves the best state (no-op when unset)."""

    def __init__(self, config, workdir: str | os.PathLike):
        self.config = config
        self.metric = str(config.get("best_metric", "") or "")
        self.mode = config.get("best_mode", "max")
        self.enabled = bool(self.metric)
        self.root = workdir_paths.resolve(workdir) / "best"
        self.record_path = self.root / "best.json"
        self.best: dict | None = None
        if self.enabled and self.record_path.exists():
            self.best = json.loads(self.record_path.read_text())
            if self.best.get("metric") != self.metric or self.best.get("mode") != self.mode:
                log.warning(
                    "%s was kept for %s (%s); config.best_metric is now %s (%s): starting over",
                    self.record_path,
                    self.best.get("metric"),
                    self.best.get("mode"),
                    self.metric,
                    self.mode,
                )
                self.best = None
        self._manager = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        old = float(self.best["value"])
        return value > old if self.mode == "max" else value < old

    def update(self, results: Mapping[str, Mapping[str, Any]], state, step: int) -> bool:
        """Saves `state` (of `step`) if its metric beats the best; returns whether it did."""
        if not self.enabled:
            return False
        name, _, key = self.metric.partition("/")
        reported = results.get(name, {})
        if key not in reported:
            raise KeyError(
                f"config.best_metric={self.metric!r}: evaluator {name!r} reported no {key!r}; "
                f"it reports {sorted(reported)}"
            )
        value = float(reported[key])
        if not math.isfinite(value) or not self._better(value):
            return False
        if self._manager is None:
            self._manager = checkpoint.make_manager(
                self.root / "checkpoints", keep=1, asynchronous=False
            )
        if step not in self._manager.all_steps():
            checkpoint.save(self._manager, step, state, None, self.config)
            self._manager.wait_until_finished()
        self.best = {"metric": self.metric, "mode": self.mode, "value": value, "step": int(step)}
        if jax.process_index() == 0:
            self.record_path.write_text(json.dumps(self.best, indent=1))
        log.info("new best %s = %.4g at step %d (%s)", self.metric, value, step, self.path())
        return True

    def path(self) -> epath.Path | None:
        return None if self.best is None else self.root / "checkpoints" / str(self.best["step"])

    def describe(self) -> str:
        """One line for the end-of-run summary."""
        if self.best is None:
            return f"best {self.metric}: no evaluation reported it, nothing kept"
        return (
            f"best {self.metric} ({self.mode}) = {self.best['value']:.4g} at step "
            f"{self.best['step']}: {self.path()}"
        )

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
