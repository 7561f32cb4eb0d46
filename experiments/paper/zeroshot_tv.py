r"""Table 1 (zero-shot text-to-video / video-to-text R@1), row GRAM T-V.

Paper (T2V / V2T R@1, %): MSR-VTT 52.8 / 49.5, DiDeMo 54.0 / 52.3, ActivityNet 58.9 / 50.9, VATEX
81.1 / 79.0.

The reference's "pretraining" stage: GRAM's losses on the VAST-27M 150k subset, continuing from a
VAST checkpoint, then zero-shot retrieval on each dataset above (reference protocol: first caption,
records with audio only; volume ranking plus matching re-rank of the top 50).

Command::

  gram-convert --format gram --input VAST_CHECKPOINT.pt --output ckpt/vast \
      --modalities text,video
  python -m gram_jax.cli.train --config experiments/paper/zeroshot_tv.py \
      --workdir runs/zeroshot_tv --config.model_init=ckpt/vast/params

Steps: the reference runs 5 epochs of 150,000 records at global batch 128 on 4 GPUs:
150,000 // 128 * 5 = 5,855 steps at global batch 128 here, on any number of devices.

Hardware: 4 GPUs with 80 GB each (A100/H100), as the reference's 4-GPU scripts (EVA01-CLIP-g/14
frames tower, ~1.2 B parameters with BERT-base and BEATs-base; bf16 matmuls, remat 'dots'). Not run
here: the development machine has 2 CPU cores and none of the datasets. CPU smoke run:
``:runlocal`` (tiny towers on the 4 real reference clips).
"""

from __future__ import annotations

from experiments.paper import paper_base

# The paper row and the arguments get_config accepts (tests/test_paper_rows.py enumerates them).
ROW = "tv"
ARGUMENTS = ("",)


def get_config(arg: str | None = None):
    """The zero-shot T-V row; ``arg='runlocal'`` shrinks it for CPU."""
    return paper_base.zeroshot_config(ROW, arg)
