r"""Ablation of the contrastive temperature (gram_jax.models.temperature.Temperature).

Variants: `log` (default: learnable log tau, init 0.07, clamped to [0.01, 1], no weight decay),
`reference` (the released code: a plain learnable divisor init 0.07, unclamped; still excluded from
weight decay here, unlike the released code), `fixed` (tau = 0.07, not trained).

Base: Table 2's T-VA row fine-tuned on MSR-VTT (1,124 steps at global batch 32; 4 x 80 GB GPUs).

Command::

  python -m gram_jax.cli.train --config experiments/ablations/temperature.py:reference \
      --workdir runs/ablation_temperature_reference --config.model_init=ckpt/gram/params

CPU smoke run: ``temperature.py:fixed,runlocal``.
"""

from __future__ import annotations

from experiments.ablations import ablation_base

VARIANTS = ("log", "reference", "fixed")


def _change(config, variant: str):
    config.model.temperature.parametrization = "reference" if variant == "reference" else "log"
    config.model.temperature.learnable = variant != "fixed"


def get_config(arg: str | None = None):
    """arg = '[log|reference|fixed][,runlocal]' (default 'log')."""
    return ablation_base.ablation_config(
        arg, what="temperature", choices=VARIANTS, default="log", change=_change
    )
