"""Which train states are known good, and what a divergence does (stop or roll back).

Step numbering: the update of step index ``i`` (0-based) turns state ``i`` into state ``i + 1``;
logs, checkpoints and errors name states, so "step 4" is the state after 4 updates.

A state is *known good* once a step has been computed **on** it and came out healthy: step index
``i`` evaluates the loss and gradients of state ``i``, so a healthy step ``i`` confirms state ``i``.
Healthy means every loss term, the gradient norm and the updated parameters and optimizer state
are finite (the step's ``nonfinite`` bitmask, one fused on-device reduction), and the loss is no
spike: ``loss <= divergence_factor * max(1, first loss of this process)`` (0 turns the spike test
off). The spike test matters: with a huge learning rate one update moves the parameters by ~lr while
the loss it reports is still normal; the *next* step's loss (1e12) is the first sign, and a state
of that magnitude is finite but cannot be resumed at any learning rate.

The loop saves only after the steps since the last save were checked, and orbax retention keeps
the newest known-good checkpoint (`newest_good`) whatever ``keep_checkpoints`` says. On a fault,
checkpoints newer than it are moved aside (`gram_jax.train.checkpoint.set_aside`, reason
``diverged``), so the next start resumes from the good one with no surgery.

`check_finite` is the same check without the spike test, raising `NonFiniteLossError` at the first
bad step, for callers that only stop (the TriDigits runner of ``experiments/``).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class NonFiniteLossError(FloatingPointError):
    """A loss term, the gradient norm or the new train state became NaN or infinite."""


class DivergenceError(NonFiniteLossError):
    """Training diverged; the message names the step, the last good checkpoint and how to resume.

    Attributes: ``step`` (the state whose step failed), ``last_good`` (checkpoint step or None).
    """

    def __init__(self, message: str, step: int, last_good: int | None):
        super().__init__(message)
        self.step = step
        self.last_good = last_good


@dataclasses.dataclass(frozen=True)
class Fault:
    """One unhealthy step: `step` is the state it ran on + 1 (log numbering); `data_position` the
    index of its batch in the data iterator (for rollback's skip)."""

    step: int
    data_position: int | None
    reason: str


@dataclasses.dataclass
class PendingStep:
    """A step whose metrics (device arrays) are not yet checked."""

    index: int
    metrics: Mapping[str, Any]
    data_position: int | None = None


class DivergenceGuard:
    """Checks pending steps in order; tracks the newest confirmed-good state.

    Args:
      names: `gram_jax.train.step.term_names(config)` (the bitmask order).
      factor: ``config.divergence_factor`` (0 = only non-finite values count).
      start_step: the state the run starts from; states before it are taken as good (they trained
        into it), the state itself is confirmed by its first step.
    """

    def __init__(self, names: Sequence[str], factor: float, start_step: int):
        self.names = tuple(names)
        self.factor = float(factor)
        self.baseline: float | None = None
        self.confirmed = start_step - 1

    def check(self, pending: Sequence[PendingStep]) -> Fault | None:
        """The first fault among `pending` (then stops), or None; confirms healthy states."""
        for p in pending:
            bad = nonfinite_terms(p.metrics, self.names)
            if bad:
                values = ", ".join(f"{k} = {v}" for k, v in bad.items())
                return Fault(p.index + 1, p.data_position, f"non-finite {values}")
            loss = float(np.asarray(p.metrics["loss"]))
            if self.baseline is None:
                self.baseline = max(1.0, loss)
            elif self.factor and loss > self.factor * self.baseline:
                return Fault(
                    p.index + 1,
                    p.data_position,
                    f"loss {loss:.4g} exceeds divergence_factor {self.factor:g} x "
                    f"{self.baseline:.4g}",
                )
            self.confirmed = max(self.confirmed, p.index)
        return None

    def newest_good(self, saved_steps: Sequence[int]) -> int | None:
        """The newest saved checkpoint step that is known good, or None."""
        good = [s for s in saved_steps if s <= self.confirmed]
        return max(good) if good else None


def nonfinite_terms(metrics: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """{name: value} of the terms whose ``nonfinite`` bit (int32[] bitmask over `names`) is set;
    STATE_TERM has no value of its own and reads nan."""
    mask = int(np.asarray(metrics["nonfinite"]))
    return {
        n: float(np.asarray(metrics[n])) if n in metrics else float("nan")
        for i, n in enumerate(names)
        if mask & (1 << i)
    }


def check_finite(step_metrics: Sequence[tuple[int, Mapping[str, Any]]], names: Sequence[str]):
    """Raises NonFiniteLossError naming the first step with a non-finite term (no spike test).

    `step_metrics` holds (step index, metrics) pairs; the error names step index + 1, the state
    that update produced (the numbering of the logs and checkpoints).
    """
    fault = DivergenceGuard(names, factor=0, start_step=0).check(
        [PendingStep(index, metrics) for index, metrics in step_metrics]
    )
    if fault is not None:
        raise NonFiniteLossError(f"step {fault.step}: {fault.reason}; stopping")


def lower_lr_command(command: Sequence[str] | None, lr: float) -> str:
    """`command` (argv of gram-train) with ``--config.optim.lr`` set to ``lr / 10``, as a shell
    line; a generic hint when the run did not come from the command line."""
    new_lr = f"--config.optim.lr={lr / 10:.3g}"
    if not command:
        return f"train_and_evaluate(config, workdir) again with config.optim.lr = {lr / 10:.3g}"
    args, drop_next = [], False
    for a in command[1:]:
        if drop_next or a.startswith("--config.optim.lr="):
            drop_next = False
            continue
        if a == "--config.optim.lr":  # the "--flag value" form
            drop_next = True
            continue
        args.append(a)
    return shlex.join(["gram-train", *args, new_lr])


def divergence_message(
    fault: Fault,
    last_good: int | None,
    checkpoint_dir,
    moved: Sequence[str],
    resume: str,
) -> str:
    """The error: the step and cause, the last good checkpoint, what was moved, how to resume."""
    parts = [f"training diverged at step {fault.step}: {fault.reason}."]
    if last_good is not None:
        parts.append(f"The last good checkpoint is {checkpoint_dir}/{last_good}.")
    else:
        parts.append(f"No known-good checkpoint exists in {checkpoint_dir}.")
    if moved:
        parts.append(f"Checkpoints of unconfirmed states were moved aside: {', '.join(moved)}.")
    start = "resume from it" if last_good is not None else "start again"
    parts.append(f"To {start} with a smaller learning rate: {resume}")
    return " ".join(parts)
