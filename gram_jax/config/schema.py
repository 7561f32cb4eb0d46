"""The allowed value of every numeric (and enumerated) config key: one table, checked generically.

`RULES` maps a dotted key pattern (`fnmatch` syntax, matched against the full dotted path, e.g.
``optim.lr`` or ``model.*.dropout_rate``) to a `Rule`. `gram_jax.config.validation` applies the
first matching rule to every leaf of a run config before anything is compiled; its error names the
key and the allowed range: ``config.optim.lr: must be a number in (0, inf), got -0.002``. A test
walks the reference config and fails when a numeric key has no rule (no new key goes unchecked).

The ``data`` section is also covered by `data_pipelines.config.validate_config` (its own home,
called by the data config factory); the rules here repeat none of its logic but make the table
complete for the trainer's checks before compile.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
    """An allowed range (or set of choices) of one config value.

    ``low``/``high`` bound the value (None = unbounded); ``low_open``/``high_open`` make the bound
    exclusive. ``integer`` requires an int. ``choices`` lists the allowed values instead of a
    range. ``optional`` also allows None. ``special`` lists extra allowed values outside the range
    (``mesh.data = -1`` means "every remaining device").
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: tuple = ()
    optional: bool = False
    special: tuple = ()

    def describe(self) -> str:
        """The allowed values in words, e.g. 'an int in [1, inf)' or "one of ('a', 'b')"."""
        if self.choices:
            text = f"one of {self.choices}"
        else:
            lo = "-inf" if self.low is None else _number(self.low)
            hi = "inf" if self.high is None else _number(self.high)
            left = "(" if self.low is None or self.low_open else "["
            right = ")" if self.high is None or self.high_open else "]"
            text = f"{'an int' if self.integer else 'a number'} in {left}{lo}, {hi}{right}"
        if self.special:
            text += f" or one of {self.special}"
        if self.optional:
            text += " or None"
        return text

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if value in self.special and not isinstance(value, bool):
            return True
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


POSITIVE = Rule(low=0, low_open=True)
NON_NEGATIVE = Rule(low=0)
POSITIVE_INT = Rule(low=1, integer=True)
NON_NEGATIVE_INT = Rule(low=0, integer=True)
PROBABILITY_BELOW_ONE = Rule(low=0, high=1, high_open=True)  # dropout: 1 would drop everything
FRACTION = Rule(low=0, high=1)
UNIT_OPEN = Rule(low=0, high=1, high_open=True)  # Adam's betas
MESH_AXIS = Rule(low=1, integer=True, special=(-1,))

# First match wins: specific keys before the patterns.
RULES: tuple[tuple[str, Rule], ...] = (
    # run length and bookkeeping
    ("total_steps", POSITIVE_INT),
    ("num_epochs", Rule(low=0, optional=True)),  # 0 or None: total_steps as set
    ("evals_per_run", NON_NEGATIVE_INT),
    ("checkpoint_steps", POSITIVE_INT),
    ("keep_checkpoints", POSITIVE_INT),
    ("log_every", POSITIVE_INT),
    ("eval_every", NON_NEGATIVE_INT),
    ("seed", Rule(low=0, high=2**32, high_open=True, integer=True)),
    ("max_rollbacks", NON_NEGATIVE_INT),
    ("divergence_factor", Rule(low=1, low_open=True, special=(0, 0.0))),
    ("on_nonfinite", Rule(choices=("stop", "rollback"))),
    ("best_mode", Rule(choices=("max", "min"))),
    ("protocol", Rule(choices=("", "standard_1ka", "released_audio_filtered"))),
    # optimizer and schedule
    ("optim.lr", POSITIVE),
    ("optim.lr_groups.*.lr", POSITIVE),
    ("optim.b1", UNIT_OPEN),
    ("optim.b2", UNIT_OPEN),
    ("optim.eps", POSITIVE),
    ("optim.weight_decay", NON_NEGATIVE),
    ("optim.grad_clip_norm", NON_NEGATIVE),
    ("optim.accumulation_steps", POSITIVE_INT),
    ("schedule.name", Rule(choices=("warmup_linear", "cosine", "constant"))),
    ("schedule.warmup_fraction", FRACTION),
    ("schedule.warmup_steps", NON_NEGATIVE_INT),
    ("schedule.end_factor", FRACTION),
    # loss
    ("loss.label_smoothing", PROBABILITY_BELOW_ONE),
    ("loss.matching_weight", NON_NEGATIVE),
    ("loss.gather_mode", Rule(choices=("global", "local", "reference"))),
    # parallelism
    ("mesh.*", MESH_AXIS),
    ("distributed.enabled", Rule(choices=("auto", "on", "off"))),
    ("distributed.num_processes", POSITIVE_INT),
    ("distributed.process_id", NON_NEGATIVE_INT),
    # model
    ("model.embed_dim", POSITIVE_INT),
    ("model.*dropout_rate", PROBABILITY_BELOW_ONE),
    ("model.*drop_path_rate", PROBABILITY_BELOW_ONE),
    ("model.*layerdrop*", PROBABILITY_BELOW_ONE),
    ("model.temperature.init", POSITIVE),
    ("model.temperature.min_value", POSITIVE),
    ("model.temperature.max_value", POSITIVE),
    ("model.vision.image_size", NON_NEGATIVE_INT),  # 0: the size preset's
    ("model.vision.patch_size", NON_NEGATIVE_INT),  # 0: the size preset's
    ("model.*max_frames", POSITIVE_INT),
    ("model.*max_clips", POSITIVE_INT),
    # data (also checked by data_pipelines.config.validate_config)
    ("data.batch_size", POSITIVE_INT),
    ("data.eval_batch_size", POSITIVE_INT),
    ("data.num_epochs", Rule(low=1, integer=True, optional=True)),
    ("data.num_frames", POSITIVE_INT),
    ("data.eval_num_frames", Rule(low=1, integer=True, optional=True)),
    ("data.image_size", POSITIVE_INT),
    ("data.seed", Rule(low=0, high=2**32, high_open=True, integer=True)),
    ("data.worker_count", NON_NEGATIVE_INT),
    ("data.worker_buffer_size", POSITIVE_INT),
    ("data.read_threads", POSITIVE_INT),
    ("data.blas_threads", Rule(low=1, integer=True, optional=True)),
    ("data.prefetch_buffer_size", POSITIVE_INT),
    ("data.text_max_len.*", Rule(low=3, integer=True)),  # [CLS] + one token + [SEP]
    ("data.audio.mel_bins", POSITIVE_INT),
    ("data.audio.target_length", POSITIVE_INT),
    ("data.audio.num_clips", POSITIVE_INT),
    ("data.audio.norm_std", POSITIVE),
    ("data.audio.norm_mean", Rule()),
    ("model.*layer_grad_scale", POSITIVE),
    # Fallbacks by naming convention, so a new key is range-checked from the start.
    ("*_steps", NON_NEGATIVE_INT),
    ("*_step", NON_NEGATIVE_INT),
    ("*_weight", NON_NEGATIVE),
    ("*dropout*", PROBABILITY_BELOW_ONE),
    ("*.lr", POSITIVE),
)


def rule_for(path: str) -> Rule | None:
    """The first rule whose pattern matches the dotted `path`, or None."""
    for pattern, rule in RULES:
        if fnmatch.fnmatchcase(path, pattern):
            return rule
    return None
