"""The contrastive temperature tau (logits = -volume / tau), as a tiny Flax NNX module.

Two parametrisations:

- ``'log'`` (default): the learnable parameter is `log_temperature`; tau = exp(clip(log tau,
  log min, log max)). Log space keeps tau positive and makes equal relative steps equally easy at
  0.01 and at 0.5. Default clamp [0.01, 1.0]: volumes of unit vectors lie in [0, 1], so tau = 0.01
  already spreads the logits over 100 nats (the same cap CLIP puts on its logit scale) and anything
  smaller makes the softmax one-hot and the gradients vanish; tau = 1 squeezes the logits into [-1,
  0], where the softmax over a batch of hundreds is nearly uniform and the loss stops teaching
  anything. Outside the clamp the gradient is zero, so tau stays at the bound (as CLIP's clipped
  logit scale does).
- ``'reference'``: the released GRAM code's `contra_temp = nn.Parameter(torch.tensor(0.07))`: the
  learnable parameter `temperature` *is* tau, an unclamped plain divisor (reference section 2.2).

`learnable=False` keeps tau fixed at `init` (stored as a non-`Param` variable, so optimizers that
update `nnx.Param` leave it alone and it still lands in checkpoints).

Weight decay: the released code decays tau (section 3.6); we do not. The parameter path always
contains the word ``temperature`` (the attribute name `log_temperature` or `temperature`, and the
owner is expected to store this module as `.temperature`), so a weight-decay mask can exclude it by
`'temperature' in path` (see `is_temperature_path`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

PARAMETRIZATIONS = ("log", "reference")


class FixedTemperature(nnx.Variable):
    """A temperature that is not trained (`learnable=False`); not an `nnx.Param`."""


class Temperature(nnx.Module):
    """Contrastive temperature tau; call it to get a float32 scalar.

    Args:
      init: initial tau (> 0); 0.07 as in the released code.
      parametrization: 'log' (learnable log tau, clamped) or 'reference' (plain learnable divisor).
      min_value, max_value: the clamp of the 'log' parametrisation (module docstring); ignored by
        'reference', which is unclamped like the released code.
      learnable: False keeps tau fixed at `init`.
    """

    def __init__(
        self,
        init: float = 0.07,
        *,
        parametrization: str = "log",
        min_value: float = 0.01,
        max_value: float = 1.0,
        learnable: bool = True,
    ):
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"Temperature parametrization={parametrization!r}: expected one of "
                f"{PARAMETRIZATIONS}"
            )
        if not init > 0:
            raise ValueError(f"Temperature init={init}: expected a positive number")
        if parametrization == "log" and not 0 < min_value <= init <= max_value:
            raise ValueError(
                f"Temperature: expected 0 < min_value <= init <= max_value, got "
                f"min_value={min_value}, init={init}, max_value={max_value}"
            )
        self.parametrization = parametrization
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.learnable = bool(learnable)
        kind = nnx.Param if learnable else FixedTemperature
        if parametrization == "log":
            self.log_temperature = kind(jnp.asarray(math.log(init), jnp.float32))
        else:
            self.temperature = kind(jnp.asarray(init, jnp.float32))

    def __call__(self) -> jnp.ndarray:
        """Returns tau, float32[] (> 0 for 'log'; whatever the divisor learned for 'reference')."""
        if self.parametrization == "reference":
            return self.temperature[...].astype(jnp.float32)
        log_tau = jnp.clip(
            self.log_temperature[...].astype(jnp.float32),
            math.log(self.min_value),
            math.log(self.max_value),
        )
        return jnp.exp(log_tau)


def is_temperature_path(path: Sequence) -> bool:
    """True if a parameter path (tuple of keys from `nnx.to_flat_state(nnx.state(...))` or optax's
    `tree_map_with_path`) belongs to a temperature; use it to exclude tau from weight decay."""
    return any("temperature" in str(getattr(k, "key", k)).lower() for k in path)
