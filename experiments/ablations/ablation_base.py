"""Shared base of the ablations: GRAM fine-tuned on MSR-VTT with text, video and audio (T-VA).

Each ablation module changes a few keys of `base_config(...)` (the Table 2 T-VA row on MSR-VTT,
experiments/paper/finetune_tva.py) for one variant named by its argument; the argument is a
comma-separated list of at most one variant and ``runlocal`` (tiny towers on the 4 real reference
clips, for a CPU smoke run). Every ablation reports the same retrieval metrics (volume and cosine
scoring; matching re-rank where the matching head is trained).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from experiments.paper import paper_base
from gram_jax.config.loading import parse_config_arg

BASE_ROW = "tva"
BASE_DATASET = "msrvtt"


def split_variant(arg: str | None, choices: Sequence[str], default: str, what: str):
    """(variant, remaining argument) from `arg`; ValueError naming the choices on a bad token."""
    parsed = parse_config_arg(arg, source=f"{what} ablation", words=(*choices, "runlocal"))
    variants = [t for t in parsed.words if t != "runlocal"]
    if len(variants) > 1:
        raise ValueError(f"{what} ablation: expected one of {tuple(choices)}, got {variants}")
    rest = parsed.join(t for t in parsed.words if t == "runlocal")
    return (variants[0] if variants else default), rest


def base_config(arg: str = "", row: str = BASE_ROW):
    """The ablation base (paper row `row` on MSR-VTT), with 'runlocal' applied if in `arg`."""
    return paper_base.finetune_config(row, ",".join(t for t in (BASE_DATASET, arg) if t))


def ablation_config(
    arg: str | None,
    *,
    what: str,
    choices: Sequence[str],
    default: str,
    change: Callable,
):
    """`base_config` (with 'runlocal' if `arg` has it) after `change(config, variant)`."""
    variant, rest = split_variant(arg, choices, default, what)
    config = base_config(rest)
    # Ablations compare variants of gram_jax's own choices, and the keys they vary are often
    # fidelity keys (loss.gather_mode, model.temperature.*): the switch is off, keys stay as set.
    config.fidelity = ""
    change(config, variant)
    return config


def set_scorings(config, scorings: tuple[str, ...]):
    """Sets the scorings of every evaluator (e.g. without 'matching' when the head is off)."""
    for name in config.evals:
        config.evals[name].scorings = scorings
