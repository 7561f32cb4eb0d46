"""Before a run touches its workdir: compare saved and new config; refuse to mix runs' metrics.

`compare_configs(saved, new)` splits the differing keys (dotted paths) into those a resume cannot
accept (they change parameter or optimizer-state shapes, or the order of the training data, so the
checkpoint no longer fits the run) and those it can (learning rates, schedule, loss weights, run
length, evaluation and bookkeeping keys; logged). A key missing from the saved config (written by
an older version) counts as its default value.

`check_workdir(config, workdir)` runs both checks before anything is written: a resume whose config
changed a refused key raises ResumeConfigError naming every such key; a run that would start from
scratch in a workdir whose ``metrics.jsonl`` holds an earlier run's records raises unless
``config.overwrite`` (then that file is moved aside, never deleted).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
from flax.traverse_util import flatten_dict

from gram_jax.config.validation import ConfigError, reference_config
from gram_jax.train import checkpoint
from gram_jax.train import workdir as workdir_paths

log = logging.getLogger(__name__)

# Keys whose change makes the saved state or data position meaningless (first match decides).
ALLOWED_MODEL_KEYS = (
    "model.*dropout_rate",
    "model.*drop_path_rate",
    "model.*layerdrop*",
    "model.dtype",  # compute dtype; parameters stay param_dtype
    "model.eval_dtype",
    "model.remat_policy",
    "model.*layer_grad_scale",  # a gradient multiplier
    "model.matching.condition_padding",  # an attention mask
)
REFUSED_KEYS = (
    "model.*",  # towers, embed_dim, modalities, scan_layers, param_dtype: parameter shapes
    "seed",  # initialisation and the step rngs
    "data.batch_size",
    "data.seed",
    "data.shuffle",
    "data.dataset",
    "data.annotations.train",
    "data.caption_mode",
    "data.repeated_ids",
    "data.filter_audio",
    "data.modalities",
    "optim.name",
    "optim.accumulation_steps",  # MultiSteps wraps the optimizer state
    "optim.lr_groups.*.pattern",  # which parameters each group's state covers
)


class ResumeConfigError(ConfigError):
    """The new config cannot continue the workdir's checkpoint, or would clobber its metrics."""


def _jsonable(config) -> dict:
    """A config as the JSON round trip stores it (tuples become lists), for a fair comparison."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=str))


def _refused(path: str, old: Any, new: Any) -> bool:
    if any(fnmatch.fnmatchcase(path, p) for p in ALLOWED_MODEL_KEYS):
        return False
    if path.startswith("optim.lr_groups.") and (old is None or new is None):
        return True  # a group added or removed changes the optimizer-state tree
    if path == "optim.grad_clip_norm":
        return bool(old) != bool(new)  # clipping on/off adds or removes a chain state
    return any(fnmatch.fnmatchcase(path, p) for p in REFUSED_KEYS)


def compare_configs(saved: Mapping[str, Any], new) -> tuple[dict, dict]:
    """(refused, accepted): each {dotted key: (saved value, new value)} of the keys that differ."""
    defaults = flatten_dict(_jsonable(reference_config()), sep=".")
    old, cur = (flatten_dict(_jsonable(c), sep=".") for c in (saved, new))
    refused, accepted = {}, {}
    for path in sorted(set(old) | set(cur)):
        a = old.get(path, defaults.get(path))
        b = cur.get(path, defaults.get(path))
        if a == b:
            continue
        (refused if _refused(path, a, b) else accepted)[path] = (a, b)
    return refused, accepted


def _describe(diff: Mapping[str, tuple]) -> str:
    return ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items())


def check_resume(config, workdir: str | os.PathLike) -> None:
    """Raises ResumeConfigError when the workdir's checkpoints cannot continue under `config`;
    logs the accepted changes (learning rates, schedule...)."""
    workdir = workdir_paths.resolve(workdir)
    directory = checkpoint.checkpoint_dir(workdir)
    steps = sorted(
        (int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir()),
        reverse=True,
    )
    saved, source = None, None
    for step in steps:
        saved = checkpoint.saved_config(directory, step)
        if saved is not None:
            source = directory / str(step)
            break
    if saved is None and steps and (workdir / "config.json").exists():
        saved, source = json.loads((workdir / "config.json").read_text()), workdir / "config.json"
    if saved is None:
        return
    refused, accepted = compare_configs(saved, config)
    if refused:
        raise ResumeConfigError(
            f"{workdir} holds checkpoints of another run configuration ({source}); these keys "
            f"change parameter shapes or the data order and cannot change on resume: "
            f"{_describe(refused)}. Use the saved values, or a fresh --workdir."
        )
    if accepted:
        log.info("resuming with changed settings: %s", _describe(accepted))


def check_fresh_start(config, workdir: str | os.PathLike) -> None:
    """Before a run starts from scratch (or config.resume / model_init) in `workdir`: refuses when
    its metrics.jsonl holds an earlier run's records, unless config.overwrite (moved aside)."""
    workdir = workdir_paths.resolve(workdir)
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists() or metrics.stat().length == 0:
        return
    if not config.get("overwrite", False):
        raise ResumeConfigError(
            f"{workdir} holds an earlier run's metrics ({metrics}) but no checkpoint to continue "
            "from; starting again there would mix two runs. Use a fresh --workdir, or "
            "--config.overwrite=True to start over (the old metrics file is kept, renamed)."
        )
    if jax.process_index() != 0:
        return  # process 0 moves the file (a shared file system)
    target = metrics.with_name(f"metrics.replaced-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    workdir_paths.move(metrics, target)
    log.warning("config.overwrite: starting over in %s; old metrics moved to %s", workdir, target)
