r"""Ablation of the alignment loss: GRAM's volume against five baselines (gram_jax.losses.LOSSES).

Variants (the argument): `volume` (GRAM, default), `cosine_anchor` (cosine InfoNCE text-video +
text-audio), `cosine_all_pairs` (cosine InfoNCE over the 3 pairs), `sigmoid` (SigLIP, bias -10,
tau initialised at 0.1 as SigLIP's t = 10), `symile` (multilinear inner product, O(N) negatives),
`area` (TRIANGLE). Only the contrastive term changes: the matching (DAM) loss is off for every
variant (its hard negatives need volume logits, which the baselines do not produce), so the volume
variant here is GRAM without DAM; experiments/ablations/matching.py measures DAM itself. Retrieval
is scored by volume and by cosine for every variant.

Base: Table 2's T-VA row fine-tuned on MSR-VTT (1,124 steps at global batch 32; 4 x 80 GB GPUs).
The paper's ablation numbers are not in the sources available here (paper Sec. 5).

Command::

  python -m gram_jax.cli.train --config experiments/ablations/loss.py:symile \
      --workdir runs/ablation_loss_symile --config.model_init=ckpt/gram/params

CPU smoke run: ``loss.py:symile,runlocal``.
"""

from __future__ import annotations

from experiments.ablations import ablation_base

VARIANTS = ("volume", "cosine_anchor", "cosine_all_pairs", "sigmoid", "symile", "area")


def _change(config, variant: str):
    config.loss.name = variant
    config.loss.matching_weight = 0.0
    config.model.matching.enabled = False
    if variant == "sigmoid":
        config.model.temperature.init = 0.1
    ablation_base.set_scorings(config, ("volume", "cosine"))


def get_config(arg: str | None = None):
    """arg = '[variant][,runlocal]' with a variant of VARIANTS (default 'volume')."""
    return ablation_base.ablation_config(
        arg, what="loss", choices=VARIANTS, default="volume", change=_change
    )
