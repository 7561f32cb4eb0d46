"""TriDigits reproduction with the loss `cosine_all_pairs` (results: docs/results.md).

Command (one fold and seed):
    gram-train --config experiments/tridigits/cosine_all_pairs.py:fold=0,seed=0 --workdir W
The sweep (experiments/tridigits/sweep.py) runs it over 4 voice folds x 5 seeds.
"""

from experiments.tridigits.tridigits_common import parse_arg, tridigits_config

LOSS = "cosine_all_pairs"


def get_config(arg: str | None = None):
    """The TriDigits config for this loss; `arg` as in `common.parse_arg`."""
    return tridigits_config(loss=LOSS, **parse_arg(arg))
