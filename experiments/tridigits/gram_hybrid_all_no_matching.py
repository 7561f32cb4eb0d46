"""TriDigits: the quickstart's recipe, GRAM + `hybrid_all` (`BREAKERS`) without the matching loss.

The volume contrastive loss plus a cosine InfoNCE term over every modality pair, with no matching
(DAM) head: from scratch that head learns nothing and adds ~45 % to the step's cost
(docs/results.md).

Command (one fold and seed):
    gram-train --config experiments/tridigits/gram_hybrid_all_no_matching.py:fold=0,seed=0 \
        --workdir W
The sweep (experiments/tridigits/sweep.py) runs it over 4 voice folds x 5 seeds.
"""

from experiments.tridigits.tridigits_common import parse_arg, tridigits_config

LOSS = "volume"
BREAKER = "hybrid_all"
MATCHING = False


def get_config(arg: str | None = None):
    """The TriDigits config for this loss; `arg` as in `common.parse_arg`."""
    return tridigits_config(loss=LOSS, breaker=BREAKER, matching=MATCHING, **parse_arg(arg))
