"""Checks a run config before anything is compiled: unknown keys, value types and value ranges.

An unknown key gets an error naming its full dotted path and the nearest valid key (difflib), e.g.
``config.optim.learning_rate: unknown key; did you mean 'optim.lr'?``. The valid keys are those of
the defaults: `gram_jax.config.defaults.trainer_defaults()` for the trainer's sections,
`gram_jax.models.gram.model_config()` for ``model`` and `data_pipelines.config.data_config()` for
``data``. Sections listed in ``OPEN_SECTIONS`` hold user-chosen names and are not key-checked.

Value ranges come from one table, `gram_jax.config.schema.RULES` (key pattern -> allowed range or
choices), applied to every leaf: ``config.optim.lr: must be a number in (0, inf), got -0.002``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import ml_collections

from data_pipelines.config import data_config
from gram_jax.config.defaults import OPEN_SECTIONS, trainer_defaults
from gram_jax.config.schema import rule_for

# Names from other stacks that difflib cannot relate to ours (too few shared letters).
SYNONYMS = {
    "learning_rate": "lr",
    "wd": "weight_decay",
    "num_train_steps": "total_steps",
    "num_steps": "total_steps",
    "train_steps": "total_steps",
    "clip_grad_norm": "grad_clip_norm",
    "grad_norm": "grad_clip_norm",
    "warmup": "warmup_steps",
    "itm_ratio": "matching_weight",
}


class ConfigError(ValueError):
    """A config key or value that the trainer cannot use."""


def reference_config() -> ml_collections.ConfigDict:
    """Every valid key with its default value (trainer, model and data sections)."""
    # lazy: models.gram imports flax/JAX; validating a config must not load them.
    from gram_jax.models.gram import model_config  # noqa: PLC0415

    reference = trainer_defaults()
    reference.model = model_config()
    reference.data = data_config()
    return reference


def _is_mapping(value: Any) -> bool:
    # ConfigDict is not registered as a collections.abc.Mapping.
    return isinstance(value, Mapping | ml_collections.ConfigDict | ml_collections.FrozenConfigDict)


def _flat_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    # Not flax.traverse_util.flatten_dict: validating a config must not import JAX (flax does),
    # and the sections themselves are listed too.
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if _is_mapping(value) and path not in OPEN_SECTIONS:
            keys.extend(_flat_keys(value, path + "."))
    return keys


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float) and not isinstance(default, bool):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    if _is_mapping(default):
        return _is_mapping(value)
    return True


def validate_config(config: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> None:
    """Raises ConfigError for the first unknown key (with the nearest valid one) or mistyped value.

    Args:
      config: the run config (ConfigDict or nested mapping).
      reference: the valid keys and their defaults; `reference_config()` when None.
    """
    reference = reference_config() if reference is None else reference
    valid = _flat_keys(reference)

    def walk(node: Mapping[str, Any], ref: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if key not in ref:
                close = [f"{prefix}{SYNONYMS[key]}"] if SYNONYMS.get(key) in ref else []
                close = close or difflib.get_close_matches(path, valid, n=1, cutoff=0.5)
                if not close:  # also try the bare key against its siblings' names
                    sib = difflib.get_close_matches(str(key), list(ref), n=1, cutoff=0.5)
                    close = [f"{prefix}{sib[0]}"] if sib else []
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"config.{path}: unknown key{hint}")
            default = ref[key]
            if not _type_ok(value, default):
                raise ConfigError(
                    f"config.{path}: expected a {type(default).__name__} like the default "
                    f"{default!r}, got {type(value).__name__} {value!r}"
                )
            if _is_mapping(value) and path not in OPEN_SECTIONS:
                walk(value, default, path + ".")

    walk(config, reference, "")
    check_ranges(config)
    _check_values(config)


def check_ranges(config: Mapping[str, Any]) -> None:
    """Raises ConfigError for the first leaf outside its `gram_jax.config.schema` rule (key and
    range named).

    Tuples and strings without a rule are not range-checked; every numeric key of the reference
    config has a rule (tests/test_reliability_config.py walks them).
    """

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if _is_mapping(value):
                walk(value, path + ".")
                continue
            rule = rule_for(path)
            if rule is None or isinstance(value, tuple | list):
                continue
            if not rule.choices and isinstance(value, str):
                continue  # a type error, reported by the type check with the default named
            if not rule.allows(value):
                raise ConfigError(f"config.{path}: must be {rule.describe()}, got {value!r}")

    walk(config, "")


def _check_values(config: Mapping[str, Any]) -> None:
    """Cross-key checks that would otherwise fail deep inside compilation or at the end."""
    best = config.get("best_metric", "")
    if best:
        name, sep, metric = str(best).partition("/")
        evals = dict(config.get("evals", {}) or {})
        if not sep or not metric or name not in evals:
            raise ConfigError(
                f"config.best_metric={best!r}: expected '<eval name>/<metric>' with an eval name "
                f"of config.evals ({sorted(evals)}), e.g. 'reference_clips/t2d/R@1'"
            )
    allow = config.get("model_init_allow_missing", ())
    if isinstance(allow, str) or not all(isinstance(p, str) and p for p in allow or ()):
        raise ConfigError(
            f"config.model_init_allow_missing={allow!r}: expected a tuple of fnmatch patterns of "
            "'/'-joined parameter paths, e.g. ('vision/*', 'audio/*')"
        )
    for name, group in dict(config.get("optim", {}).get("lr_groups", {}) or {}).items():
        missing = {"pattern", "lr"} - set(group)
        extra = set(group) - {"pattern", "lr"}
        if missing or extra:
            raise ConfigError(
                f"config.optim.lr_groups.{name}: expected exactly the keys 'pattern' and 'lr', "
                f"missing {sorted(missing)}, unknown {sorted(extra)}"
            )
    for name, ev in dict(config.get("evals", {}) or {}).items():
        if not _is_mapping(ev) or "type" not in ev:
            raise ConfigError(f"config.evals.{name}: expected a dict with a 'type' key")
