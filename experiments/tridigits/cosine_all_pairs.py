"""TriDigits reproduction with the loss `cosine_all_pairs` (results: docs/results.md).

Command (one fold and seed):
    gram-train --config experiments/tridigits/cosine_all_pairs.py:fold=0,seed=0 --workdir W
The sweep (experiments/tridigits/sweep.py) runs it over 4 voice folds x 5 seeds.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from tridigits_common import parse_arg, tridigits_config  # noqa: E402

LOSS = "cosine_all_pairs"


def get_config(arg: str | None = None):
    """The TriDigits config for this loss; `arg` as in `common.parse_arg`."""
    return tridigits_config(loss=LOSS, **parse_arg(arg))
