"""TriDigits: GRAM's recipe + the symmetry breaker `hybrid` (`BREAKERS`, tridigits_common.py).

Command (one fold and seed):
    gram-train --config experiments/tridigits/gram_hybrid.py:fold=0,seed=0 --workdir W
The sweep (experiments/tridigits/sweep.py) runs it over 4 voice folds x 5 seeds.
"""

from experiments.tridigits.tridigits_common import parse_arg, tridigits_config

LOSS = "volume"
BREAKER = "hybrid"


def get_config(arg: str | None = None):
    """The TriDigits config for this loss; `arg` as in `common.parse_arg`."""
    return tridigits_config(loss=LOSS, breaker=BREAKER, **parse_arg(arg))
