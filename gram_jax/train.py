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
import copy
import dataclasses
import functools
import importlib
import logging
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from data_pipelines.pipeline import make_train_iterator, steps_per_epoch
from gram_jax import checkpoint, metric_writers, optim, parallel, resume_check
from gram_jax.best_checkpoint import BestCheckpoint
from gram_jax.config_validation import validate_config
from gram_jax.divergence import (
    DivergenceError,
    DivergenceGuard,
    Fault,
    PendingStep,
    divergence_message,
    lower_lr_command,
)
from gram_jax.evaluators.runner import run_evaluations
from gram_jax.fidelity import finalize_config
from gram_jax.models.gram import GramModel
from gram_jax.train_step import make_train_step, merge_model, split_model, term_names

log = logging.getLogger(__name__)


def build_model(model_config, seed: int | jax.Array):
    """A GramModel (call inside jit or eval_shape); flax's eager sharding off, we shard."""
    with nnx.use_eager_sharding(False):
        return GramModel(model_config, rngs=nnx.Rngs(seed))


def init_train_state(model_config, tx, seed) -> dict:
    """A fresh train state for `seed` (an int or a traced int32 scalar: jit/vmap over seeds).

    Returns {'params', 'model_state' (nnx.State), 'opt_state' (tx.init), 'step' int32[],
    'rng' uint32[2] (key data of `seed`)}, unsharded; `Trainer.init_state` shards it.
    """
    # A key, not the int: nnx.Rngs turns only Python ints into keys (equal to this one).
    key = jax.random.key(seed)
    model = build_model(model_config, key)
    _, params, rest = split_model(model)
    return dict(
        params=params,
        model_state=rest,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(key),
    )


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def opt_state_shardings(abstract_opt_state, params_sharding: Mapping, params_shape: Mapping, mesh):
    """Shardings of the optimizer state: a leaf whose path ends in a parameter's path and has its
    shape (Adam's mu and nu) follows that parameter; everything else (counts) is replicated."""
    by_path = {}
    for path, sharding in jax.tree_util.tree_flatten_with_path(params_sharding)[0]:
        by_path[_path_keys(path)] = sharding
    shapes = {
        _path_keys(p): s.shape for p, s in jax.tree_util.tree_flatten_with_path(params_shape)[0]
    }
    longest = max((len(k) for k in by_path), default=0)

    def leaf(path, value):
        keys = _path_keys(path)
        for n in range(min(longest, len(keys)), 0, -1):
            tail = keys[-n:]
            if tail in by_path and shapes[tail] == tuple(value.shape):
                return by_path[tail]
        return parallel.replicated(mesh)

    return jax.tree_util.tree_map_with_path(leaf, abstract_opt_state)


class Trainer:
    """Holds everything built once per run: mesh, abstract model, optimizer, shardings, step fn."""

    def __init__(self, config, mesh=None):
        self.config = config
        self.mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
        divisor = parallel.batch_divisor(self.mesh)
        if config.data.batch_size % divisor:
            raise ValueError(
                f"config.data.batch_size={config.data.batch_size} is not divisible by the "
                f"{divisor} batch shards of the mesh {dict(self.mesh.shape)}"
            )
        abstract_model = nnx.eval_shape(lambda: build_model(config.model, config.seed))
        self.graphdef, self.abstract_params, self.abstract_rest = nnx.split(
            abstract_model, nnx.Param, ...
        )
        self.tx, self.schedules = optim.make_optimizer(
            config.optim, config.schedule, config.total_steps, abstract_model
        )
        params_sharding = parallel.state_shardings(self.abstract_params, self.mesh)
        rest_sharding = parallel.state_shardings(self.abstract_rest, self.mesh)
        abstract_state = jax.eval_shape(self._init_state)
        replicated = parallel.replicated(self.mesh)
        self.state_sharding = dict(
            params=params_sharding,
            model_state=rest_sharding,
            opt_state=opt_state_shardings(
                abstract_state["opt_state"], params_sharding, abstract_state["params"], self.mesh
            ),
            step=replicated,
            rng=replicated,
        )
        self.abstract_state = checkpoint.abstract_like(abstract_state, self.state_sharding)
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(parallel.BATCH_AXES))
        self.train_step = make_train_step(
            config,
            self.graphdef,
            self.abstract_params,
            self.abstract_rest,
            self.tx,
            self.mesh,
            self.state_sharding,
            self.batch_sharding,
            self.schedules,
        )
        self.term_names = term_names(config)
        # The evaluation towers may compute in another dtype (model.eval_dtype, fidelity row 7);
        # the parameters are the same (param_dtype), only the module graph differs.
        eval_dtype = config.model.get("eval_dtype", "")
        self.eval_graphdef = self.graphdef
        if eval_dtype and eval_dtype != config.model.dtype:
            eval_model = ml_collections.ConfigDict(config.model.to_dict())
            eval_model.dtype = eval_dtype
            self.eval_graphdef = nnx.split(
                nnx.eval_shape(lambda: build_model(eval_model, config.seed)), nnx.Param, ...
            )[0]

    def _init_state(self) -> dict:
        return init_train_state(self.config.model, self.tx, self.config.seed)

    def init_state(self) -> dict:
        """A fresh, sharded train state (initialised directly in its shardings)."""
        return jax.jit(self._init_state, out_shardings=self.state_sharding)()

    def encode_fn(self) -> Callable:
        """Jitted eval-mode encoder: (params, model_state, batch) -> {modality: float32[B, D]}
        plus 'condition'/'condition_mask' tokens for matching re-rank."""
        graphdef, ap, ar = self.eval_graphdef, self.abstract_params, self.abstract_rest

        @jax.jit
        def encode(params, model_state, batch):
            model = merge_model(graphdef, ap, ar, params, model_state)
            out = model.encode(batch, train=False)
            return dict(out.embeddings), out.condition, out.condition_mask

        return encode

    def match_fn(self) -> Callable:
        """Jitted eval-mode matching head: (params, model_state, ids, mask, cond, cond_mask)."""
        graphdef, ap, ar = self.eval_graphdef, self.abstract_params, self.abstract_rest

        @jax.jit
        def match(params, model_state, ids, mask, cond, cond_mask):
            model = merge_model(graphdef, ap, ar, params, model_state)
            return model.match_logits(ids, mask, cond, cond_mask, train=False)

        return match


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


def resolve_run_length(config):
    """`config` with total_steps derived from config.num_epochs when that is set (a copy), else
    `config` itself: steps = samples actually kept (after filters) // data.batch_size * epochs."""
    epochs = config.get("num_epochs")
    if epochs is None:
        return config

    per_epoch = steps_per_epoch(config.data)
    total = max(1, int(per_epoch * float(epochs)))
    log.info(
        "num_epochs=%g: total_steps = %d (%d global batches of %d per epoch over the kept samples)",
        float(epochs),
        total,
        per_epoch,
        config.data.batch_size,
    )
    config = copy.deepcopy(config)
    config.total_steps = total
    return config


def _has_checkpoints(workdir: pathlib.Path) -> bool:
    directory = checkpoint.checkpoint_dir(workdir)
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def train_and_evaluate(
    config, workdir: str | pathlib.Path, *, command: Sequence[str] | None = None
) -> dict:
    """Trains `config` for `config.total_steps` steps in `workdir`; returns the final train state.

    Resumes from the workdir's newest readable checkpoint when there is one (see gram_jax.checkpoint
    for the full resume order), after checking that the saved config fits (gram_jax.resume_check).
    Raises DivergenceError naming the step, the last good checkpoint and a resume command
    (`command`: the gram-train argv, for that hint) when training diverges and
    ``config.on_nonfinite`` is "stop" or its rollbacks are spent; PreemptedError after saving on
    SIGTERM; CheckpointWriteError as soon as a save fails. See docs/reliability.md.
    """
    parallel.maybe_initialize_distributed(config.get("distributed"))
    finalize_config(config)
    validate_config(config)
    config = resolve_run_length(config)
    workdir = pathlib.Path(workdir).absolute()
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
                _load_hook(config.report)(config, trainer, state, workdir)
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


def _flat_hparams(config) -> dict:
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)

    walk(config, "")
    return flat


def _evaluate(
    trainer: Trainer, config, workdir: pathlib.Path, writer, best, state, step: int
) -> dict:
    """Runs every evaluator of config.evals; writes scalars and one JSON line per evaluator;
    keeps the state as the best checkpoint when config.best_metric improved."""
    results = run_evaluations(config, trainer, state)
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
