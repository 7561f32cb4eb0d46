"""TriDigits reproduction with the loss `volume` (results: docs/results.md).

Command (one fold and seed):
    gram-train --config experiments/tridigits/gram.py:fold=0,seed=0 --workdir W
The sweep (experiments/tridigits/sweep.py) runs it over 4 voice folds x 5 seeds.
"""

from experiments.tridigits.tridigits_common import parse_arg, tridigits_config

LOSS = "volume"


def get_config(arg: str | None = None):
    """The TriDigits config for this loss; `arg` as in `common.parse_arg`."""
    return tridigits_config(loss=LOSS, **parse_arg(arg))
