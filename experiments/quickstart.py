"""Quickstart: train a small GRAM model on real TriDigits data on a laptop CPU.

    pip install -e . && gram-train --config experiments/quickstart.py --workdir workdirs/quickstart

On a fresh machine this first builds TriDigits (about 1 minute: real handwritten digits with
synthetic motion, real human speech in 22 languages, the number word as text; see
data_pipelines/datasets/tridigits/) into ~/.cache/gram_jax/tridigits, then trains GRAM's full
recipe (volume contrastive loss, learnable temperature, matching loss with hard negatives, warm-up)
on tiny towers, evaluates retrieval on the held-out voices of fold 0, and writes TensorBoard
events, ``metrics.jsonl``, a retrieval table (``report.json``, printed) and a 2-D embedding plot
(``embeddings.png``) into the workdir. Budget: <= 10 minutes on 2 CPU cores, build included.

Arguments (``--config experiments/quickstart.py:ARG``): ``runlocal`` (the small dataset variant,
2 steps at batch 8: the smoke test), or ``fold=K,seed=S,steps=N,...`` (experiments/tridigits).
The environment variable ``GRAM_JAX_QUICKSTART_STEPS`` overrides the step count (the notebook's
test shrinks the run with it).
"""

import os

from experiments.tridigits.tridigits_common import parse_arg, tridigits_config

STEPS = 400


def get_config(arg: str | None = None):
    """GRAM on TriDigits fold 0 (``arg``: see the module docstring)."""
    kwargs = {"total_steps": STEPS, **parse_arg(arg)}
    if os.environ.get("GRAM_JAX_QUICKSTART_STEPS"):
        kwargs["total_steps"] = int(os.environ["GRAM_JAX_QUICKSTART_STEPS"])
    config = tridigits_config(loss="volume", **kwargs)
    config.optim.lr = 2e-3
    config.evals.test = dict(type="retrieval", split="test", scorings=("volume", "cosine"))
    config.log_every = min(config.log_every, config.total_steps)
    # The end-of-run report (retrieval table + embedding plot), called after the last evaluation.
    config.report = "gram_jax.evaluators.report:report_run"
    return config
