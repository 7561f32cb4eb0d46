r"""Table 2 (fine-tuned text-to-video / video-to-text R@1), row GRAM T-VA.

Paper (T2V / V2T R@1, %) and the steps converted from the reference's epochs (reference_steps:
records // global batch * epochs, the reference's own formula; global batch as its 4 GPUs). The
run counts them itself from the training file ``<dataset>/annotations/descs_ret_train.json``
after the audio filter (``num_epochs``, paper_base); the counts below assume one row per video
(MSR-VTT with one row per caption: 180,000 // 32 * 4 = 22,500):
- msrvtt: 58.4 / 59.0 (9,000 // 32 * 4 = 1,124 steps at global batch 32)
- didemo: 67.3 / 63.5 (8,363 // 64 * 40 = 5,200 steps at global batch 64)
- activitynet: 69.9 / 66.9 (10,009 // 64 * 20 = 3,120 steps at global batch 64)
- vatex: 87.0 / 84.6 (25,991 // 64 * 2.5 = 1,015 steps at global batch 64)

Fine-tuning starts from the GRAM pretrained release (GRAM_pretrained_4modalities / 5modalities,
converted once); the dataset is the argument (default msrvtt). Commands::

  gram-convert --format gram --input GRAM_pretrained.pt --output ckpt/gram \
      --modalities text,video,audio
  python -m gram_jax.cli.train --config experiments/paper/finetune_tva.py:msrvtt \
      --workdir runs/finetune_msrvtt_tva --config.model_init=ckpt/gram/params
  python -m gram_jax.cli.train --config experiments/paper/finetune_tva.py:didemo \
      --workdir runs/finetune_didemo_tva --config.model_init=ckpt/gram/params
  python -m gram_jax.cli.train --config experiments/paper/finetune_tva.py:activitynet \
      --workdir runs/finetune_activitynet_tva --config.model_init=ckpt/gram/params
  python -m gram_jax.cli.train --config experiments/paper/finetune_tva.py:vatex \
      --workdir runs/finetune_vatex_tva --config.model_init=ckpt/gram/params

Hardware: 4 GPUs with 80 GB each (A100/H100), as the reference's 4-GPU scripts (EVA01-CLIP-g/14
frames tower, ~1.2 B parameters with BERT-base and BEATs-base; bf16 matmuls, remat 'dots'). Not run
here: the development machine has 2 CPU cores and none of the datasets. CPU smoke run:
``:runlocal`` (tiny towers on the 4 real reference clips).
"""

from __future__ import annotations

from experiments.paper import paper_base

# The paper row and the arguments get_config accepts (tests/test_paper_rows.py enumerates them).
ROW = "tva"
ARGUMENTS = paper_base.REPORTED["tva"]


def get_config(arg: str | None = None):
    """The fine-tuned T-VA row; ``arg`` = '[dataset][,runlocal]'."""
    return paper_base.finetune_config(ROW, arg)
