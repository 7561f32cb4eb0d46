r"""Ablation of how the contrastive batch spans devices (gram_jax.losses.gather, DESIGN section 5).

Variants: `global` (default: exact loss and gradient over the global batch), `local` (shard_map:
local rows against all-gathered columns, gradient through the all_gather; the same numbers up to
summation order, less memory), `reference` (the released code: gathered copies detached, so the
anchor-to-data term trains only the text side and the data-to-anchor term only the data side). The
expected result: global == local; reference differs in optimisation, not in the loss value.

Base: Table 2's T-VA row fine-tuned on MSR-VTT (1,124 steps at global batch 32; 4 x 80 GB GPUs).

Command::

  python -m gram_jax.cli.train --config experiments/ablations/gather_mode.py:reference \
      --workdir runs/ablation_gather_reference --config.model_init=ckpt/gram/params

CPU smoke run: ``gather_mode.py:local,runlocal``.
"""

from __future__ import annotations

from experiments.ablations import ablation_base

VARIANTS = ("global", "local", "reference")


def _change(config, variant: str):
    config.loss.gather_mode = variant


def get_config(arg: str | None = None):
    """arg = '[global|local|reference][,runlocal]' (default 'global')."""
    return ablation_base.ablation_config(
        arg, what="gather_mode", choices=VARIANTS, default="global", change=_change
    )
