r"""Ablation of the number of modalities in the volume: T-V (k = 2), T-VA (k = 3), T-VAS (k = 4).

With k = 2 the volume of unit vectors is |sin theta| (cosine-like, paper appendix A.3); each added
modality enters every Gram matrix. The variants are the paper's Table 2 rows on MSR-VTT
(experiments/paper/finetune_{tv,tva,tvas}.py), so their numbers are the paper's: T2V R@1 55.7 /
58.4 / 64.0, and the model trains and scores exactly the variant's modalities (T-VA has no
subtitle tower, tests/test_paper_rows.py). Subtitles are missing for 238 of the 1,000 MSR-VTT test
videos (empty strings): those are dropped from the Gram matrix (present_subtitle=False) instead of
encoding "[CLS][SEP]" as the released code does.

Command::

  python -m gram_jax.cli.train --config experiments/ablations/modalities.py:tvas \
      --workdir runs/ablation_modalities_tvas --config.model_init=ckpt/gram/params

Steps: counted from ``msrvtt/annotations/descs_ret_train.json`` when the run starts (1,124 at
global batch 32 for one row per video, 9,000 // 32 * 4); 4 x 80 GB GPUs. CPU smoke run:
``modalities.py:tv,runlocal``.
"""

from __future__ import annotations

from experiments.ablations import ablation_base

VARIANTS = ("tv", "tva", "tvas")


def get_config(arg: str | None = None):
    """arg = '[tv|tva|tvas][,runlocal]' (default 'tva')."""
    variant, rest = ablation_base.split_variant(arg, VARIANTS, "tva", "modalities")
    return ablation_base.base_config(rest, row=variant)
