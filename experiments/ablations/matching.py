r"""Ablation of the data-anchor matching (DAM) loss: L = L_vol + lambda * L_DAM.

Variants: `on` (default: lambda = 0.1 with volume-based hard negatives, as the released code),
`off` (lambda = 0 and no matching head: volume contrastive loss only; retrieval is then scored by
volume and cosine, without the matching re-rank).

Base: Table 2's T-VA row fine-tuned on MSR-VTT (1,124 steps at global batch 32; 4 x 80 GB GPUs).

Command::

  python -m gram_jax.cli.train --config experiments/ablations/matching.py:off \
      --workdir runs/ablation_matching_off --config.model_init=ckpt/gram/params

CPU smoke run: ``matching.py:off,runlocal``.
"""

from __future__ import annotations

from experiments.ablations import ablation_base

VARIANTS = ("on", "off")


def _change(config, variant: str):
    if variant == "off":
        config.loss.matching_weight = 0.0
        config.model.matching.enabled = False
        ablation_base.set_scorings(config, ("volume", "cosine"))


def get_config(arg: str | None = None):
    """arg = '[on|off][,runlocal]' (default 'on')."""
    return ablation_base.ablation_config(
        arg, what="matching", choices=VARIANTS, default="on", change=_change
    )
