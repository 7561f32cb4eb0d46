r"""Table 2 (fine-tuned text-to-video / video-to-text R@1), row GRAM T-VAS.

Paper (T2V / V2T R@1, %) and the steps converted from the reference's epochs (reference_steps:
records // global batch * epochs, the reference's own formula; global batch as its 4 GPUs). The
run counts them itself from the training file ``<dataset>/annotations/descs_ret_train.json``
after the audio filter (``num_epochs``, paper_base); the counts below assume one row per video
(MSR-VTT with one row per caption: 180,000 // 32 * 4 = 22,500):
- msrvtt: 64.0 / 64.8 (9,000 // 32 * 4 = 1,124 steps at global batch 32)
- vatex: 87.7 / 84.2 (25,991 // 64 * 2.5 = 1,015 steps at global batch 64)

Fine-tuning starts from the GRAM pretrained release (GRAM_pretrained_4modalities / 5modalities,
converted once); the dataset is the argument (default msrvtt). Commands::

  gram-convert --format gram --input GRAM_pretrained.pt --output ckpt/gram \
      --modalities text,video,audio,subtitle
  python -m gram_jax.cli.train --config experiments/paper/finetune_tvas.py:msrvtt \
      --workdir runs/finetune_msrvtt_tvas --config.model_init=ckpt/gram/params
  python -m gram_jax.cli.train --config experiments/paper/finetune_tvas.py:vatex \
      --workdir runs/finetune_vatex_tvas --config.model_init=ckpt/gram/params

Hardware: 4 GPUs with 80 GB each (A100/H100), as the reference's 4-GPU scripts (EVA01-CLIP-g/14
frames tower, ~1.2 B parameters with BERT-base and BEATs-base; bf16 matmuls, remat 'dots'). Not run
here: the development machine has 2 CPU cores and none of the datasets. CPU smoke run:
``:runlocal`` (tiny towers on the 4 real reference clips).
"""

from __future__ import annotations

from experiments.paper import paper_base

# The paper row and the arguments get_config accepts (tests/test_paper_rows.py enumerates them).
ROW = "tvas"
ARGUMENTS = paper_base.REPORTED["tvas"]


def get_config(arg: str | None = None):
    """The fine-tuned T-VAS row; ``arg`` = '[dataset][,runlocal]'."""
    return paper_base.finetune_config(ROW, arg)
