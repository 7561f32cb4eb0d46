"""`train_and_evaluate(config, workdir)`: mesh -> shapes -> shardings -> init or restore -> loop.

One process per host. Every process runs the same program on its own slice of each global batch
(`data_pipelines` shards by process; `parallel.global_batch` assembles the global arrays). Process 0
writes TensorBoard events and ``metrics.jsonl``; all processes take part in checkpoint saves.

Workdir layout: ``W/checkpoints/<step>/`` (orbax), ``W/events.out.tfevents.*`` (TensorBoard),
``W/metrics.jsonl`` (one JSON object per evaluation), ``W/config.json`` (the resolved config,
written after the resume check), ``W/checkpoints_set_aside/`` (unreadable or diverged checkpoints,
renamed), ``W/best/`` (the best state by ``config.best_metric``).

What is saved when, what survives which fault and the exit codes: docs/reliability.md.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict
from tqdm import tqdm

from data_pipelines.pipeline import make_train_iterator
from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.config import resume as resume_check
from gram_jax.evaluators.runner import run_evaluations
from gram_jax.train import checkpoint, metric_writers
from gram_jax.train import workdir as workdir_paths
from gram_jax.train.best import BestCheckpoint
from gram_jax.train.guard import (
    DivergenceError,
    DivergenceGuard,
    Fault,
    PendingStep,
    divergence_message,
    lower_lr_command,
)
from gram_jax.train.state import Trainer

log = logging.getLogger(__name__)


def _progress_bar(config, total: int, initial: int):
    if not (config.progress_bar and jax.process_index() == 0 and sys.stderr.isatty()):
        return None
    return tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train")


def _mean_metrics(pending: list[PendingStep]) -> dict[str, float]:
    host = [jax.device_get(p.metrics) for p in pending]
    keys = [k for k in host[0] if k != "nonfinite" and not k.startswith("skipped_")]
    return {k: float(np.mean([np.asarray(h[k], np.float64) for h in host])) for k in keys}


def _skipped(pending: list[PendingStep]) -> collections.Counter:
    """{modality: masked bad items} summed over `pending` (bad_data='skip'; global batch counts)."""
    counts: collections.Counter = collections.Counter()
    for p in pending:
        for key, value in p.metrics.items():
            if key.startswith("skipped_"):
                counts[key.removeprefix("skipped_")] += int(np.asarray(value))
    return counts


def _data_position(train_iter) -> int | None:
    """Global batches the iterator has consumed (its state's 'step'), or None if it has none."""
    state = train_iter.get_state() if hasattr(train_iter, "get_state") else None
    return int(state["step"]) if isinstance(state, dict) and "step" in state else None


def _has_checkpoints(workdir: epath.Path) -> bool:
    directory = checkpoint.checkpoint_dir(workdir)
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def train_and_evaluate(
    config, workdir: str | os.PathLike, *, command: Sequence[str] | None = None
) -> dict:
    """Trains `config` for `config.total_steps` steps in `workdir`; returns the final train state.

    Resumes from the workdir's newest readable checkpoint when there is one (see
    gram_jax.train.checkpoint for the full resume order), after checking that the saved config
    fits (gram_jax.config.resume).
    Raises DivergenceError naming the step, the last good checkpoint and a resume command
    (`command`: the gram-train argv, for that hint) when training diverges and
    ``config.on_nonfinite`` is "stop" or its rollbacks are spent; PreemptedError after saving on
    SIGTERM; CheckpointWriteError as soon as a save fails. See docs/reliability.md.
    """
    parallel.maybe_initialize_distributed(config.get("distributed"))
    config = prepare(config)
    workdir = workdir_paths.resolve(workdir)  # a local folder or gs://bucket/run
    is_main = jax.process_index() == 0
    # Nothing is written before these checks (a refused resume leaves the workdir as it was).
    resume_check.check_resume(config, workdir)
    resumable = _has_checkpoints(workdir)
    if not resumable:
        resume_check.check_fresh_start(config, workdir)

    trainer = Trainer(config)

    train_iter = make_train_iterator(
        config.data, process_index=jax.process_index(), process_count=jax.process_count()
    )
    guard = DivergenceGuard(trainer.term_names, config.divergence_factor, start_step=0)
    ckpt_dir = checkpoint.checkpoint_dir(workdir)
    manager = checkpoint.make_manager(
        ckpt_dir,
        keep=config.keep_checkpoints,
        asynchronous=config.async_checkpoints,
        good_bound=lambda: guard.confirmed,
    )
    state, train_iter, source = checkpoint.restore_or_initialize(
        manager, config, trainer.abstract_state, trainer.init_state, train_iter
    )
    if resumable and not source.startswith("workdir:"):
        resume_check.check_fresh_start(config, workdir)  # every checkpoint was unreadable
    step = int(jax.device_get(state["step"]))
    guard.confirmed = step - 1
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
    log.info("starting at step %d from %s on mesh %s", step, source, dict(trainer.mesh.shape))

    writer = metric_writers.create_writer(workdir, just_logging=not is_main)
    if step == 0:
        writer.write_hparams(_flat_hparams(config))
    progress = metric_writers.report_progress(config.total_steps, writer)
    bar = _progress_bar(config, config.total_steps, step)
    watcher = checkpoint.PreemptionWatcher()
    best = BestCheckpoint(config, workdir)
    evaluate = functools.partial(_evaluate, trainer, config, workdir, writer, best)
    pending: list[PendingStep] = []
    skipped: collections.Counter = collections.Counter()
    skip_positions: set[int] = set()
    rollbacks = 0

    def flush_metrics() -> Fault | None:
        """Checks the pending steps (confirming good states); logs them if all are healthy."""
        if not pending:
            return None
        fault = guard.check(pending)
        if fault is None:
            skipped.update(_skipped(pending))
            if is_main:
                scalars = _mean_metrics(pending)
                scalars.update({f"data/skipped_{m}": n for m, n in skipped.items()})
                writer.write_scalars(pending[-1].index + 1, scalars)
                metric_writers.report_step(pending[-1].index + 1, config.total_steps, scalars, bar)
        pending.clear()
        return fault

    def recover(fault: Fault):
        """Moves unconfirmed checkpoints aside; rolls back to the newest good one or raises."""
        nonlocal rollbacks
        checkpoint.wait_for_saves(manager)
        good = guard.newest_good(manager.all_steps())
        moved = []
        for s in sorted(manager.all_steps()):
            if good is None or s > good:
                if is_main:
                    moved.append(str(checkpoint.set_aside(ckpt_dir, s, "diverged")))
                parallel.barrier(f"gram_jax_diverged_{s}")
        manager.reload()
        can_roll_back = config.on_nonfinite == "rollback" and good is not None
        if can_roll_back and rollbacks < config.max_rollbacks:
            rollbacks += 1
            if fault.data_position is not None:
                skip_positions.add(fault.data_position)
            restored, it = checkpoint.restore(manager, good, trainer.abstract_state, train_iter)
            guard.confirmed = good - 1
            log.warning(
                "rollback %d of %d: training diverged at step %d (%s); restored checkpoint %d, "
                "skipping batch %s",
                rollbacks,
                config.max_rollbacks,
                fault.step,
                fault.reason,
                good,
                fault.data_position,
            )
            return restored, it, good
        if config.on_nonfinite == "rollback" and good is not None:
            fault = dataclasses.replace(
                fault, reason=f"{fault.reason} (after {rollbacks} rollbacks, the limit)"
            )
        resume = lower_lr_command(command, float(config.optim.lr))
        raise DivergenceError(
            divergence_message(fault, good, ckpt_dir, moved, resume), fault.step, good
        )

    start = step
    writing = False  # an async save was started and its result not yet checked
    try:
        if config.eval_at_start and step == 0:
            evaluate(state, step)
        step_fn = None
        while step < config.total_steps:
            if writing:
                writing = not checkpoint.raise_save_errors(manager)
            position = _data_position(train_iter)
            while position is not None and position in skip_positions:
                next(train_iter)  # rollback: the batch that diverged is not trained on again
                position += 1
            batch = parallel.global_batch(next(train_iter), trainer.mesh)
            if step_fn is None:
                # Compile ahead of time, then line the processes up: the first step's
                # collectives must not wait on a peer that is still compiling.
                step_fn = trainer.train_step.lower(state, batch).compile()
                parallel.barrier("gram_jax_train_step_compiled")
            state, metrics = step_fn(state, batch)
            pending.append(PendingStep(step, metrics, position))
            step += 1
            progress(step)
            last = step == config.total_steps
            stop = watcher.should_stop(step)
            save = step % config.checkpoint_steps == 0 or last or stop
            if step % config.log_every == 0 or save:
                # Saves follow a check of every step since the last one: only known-finite
                # states reach the disk.
                fault = flush_metrics()
                if fault is not None:
                    state, train_iter, step = recover(fault)
                    continue
            if save:
                writing = checkpoint.save(manager, step, state, train_iter, config, force=stop)
            if config.eval_every and step % config.eval_every == 0 and not last:
                evaluate(state, step)
            if stop:
                log.warning("stopping at step %d after a pre-emption signal", step)
                raise checkpoint.PreemptedError(step, ckpt_dir)
        else:
            # A restart of a finished run trains nothing and does not evaluate again.
            if config.evals and step > start:
                evaluate(state, step)
            if config.get("report") and step > start:  # every process: the report gathers
                _load_hook(config.report)(config, trainer.eval_model, state, workdir)
            if is_main:
                _summary(config, ckpt_dir, step, best, skipped)
    finally:
        try:
            checkpoint.wait_for_saves(manager)
        finally:
            manager.close()
            best.close()
            writer.flush()
            watcher.close()
            if bar is not None:
                bar.close()
    return state


def _summary(config, ckpt_dir, step, best, skipped) -> None:
    """The end-of-run lines: final checkpoint, best checkpoint, masked bad items."""
    log.info("finished at step %d: final state %s/%d", step, ckpt_dir, step)
    if best.enabled:
        log.info("%s", best.describe())
    if config.data.get("bad_data") == "skip":
        total = sum(skipped.values())
        detail = ", ".join(f"{m} {n}" for m, n in sorted(skipped.items()) if n) or "none"
        log.info("bad_data='skip': %d bad media items masked in training (%s)", total, detail)


def _load_hook(spec: str):
    """The callable named by a 'package.module:function' string (config.report)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"config.report={spec!r}: expected 'package.module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"config.report={spec!r}: {module} has no function {name!r}")
    return fn


def _flat_hparams(config) -> dict[str, int | float | str | bool]:
    """{'section.key': value} of every leaf of the config (tuples and None as their str)."""
    flat = flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}


def _evaluate(
    trainer: Trainer, config, workdir: epath.Path, writer, best, state, step: int
) -> dict:
    """Runs every evaluator of config.evals; writes scalars and one JSON line per evaluator;
    keeps the state as the best checkpoint when config.best_metric improved."""
    results = run_evaluations(config, trainer.eval_model, state)
    if jax.process_index() == 0:
        for name, metrics in results.items():
            scalars = {
                f"{name}/{k}": v for k, v in metrics.items() if np.ndim(v) == 0 and _is_number(v)
            }
            writer.write_scalars(step, scalars)
            metric_writers.append_jsonl(
                workdir / "metrics.jsonl", {"step": step, "eval": name, **metrics}
            )
        writer.flush()
    best.update(results, state, step)
    return results


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
