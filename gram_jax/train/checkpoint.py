"""Checkpoints: an orbax CheckpointManager of {train state, data iterator state, config}.

Layout: ``W/checkpoints/<step>/{state, data, config}``; ``state`` is the train-state pytree
(params, opt_state, model_state, step, rng; sharded arrays saved by every process), ``data``
holds one JSON file per process with its Grain iterator state, ``config`` the run config as JSON.

Saves are asynchronous (the step loop continues while arrays are written; `raise_save_errors`
surfaces a failed write at the next step, in one line). Retention keeps the newest ``keep``
checkpoints *and* the newest known-good one (`KeepStep`, fed by `gram_jax.train.guard`), so a
diverging run can never delete the state it must go back to.

Restoring takes abstract targets that carry the *current* mesh's shardings, so a checkpoint
written on 8 devices restores onto 1 or 4 (orbax reshards on read). `restore_newest_intact` tries
the newest checkpoint first; one that cannot be read is moved aside to ``W/checkpoints_set_aside/``
(renamed, never deleted), named in one log line with its cause, and the next older one is tried.

Resume order (`restore_or_initialize`): the workdir's newest readable checkpoint, then
``config.resume`` (another run's checkpoint directory), then ``config.model_init`` (converted
weights, possibly a subset of the parameters), then a fresh initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from gram_jax import parallel
from gram_jax.convert import params_file
from gram_jax.train import workdir as workdir_paths

log = logging.getLogger(__name__)

SET_ASIDE_DIR = "checkpoints_set_aside"


class CheckpointWriteError(OSError):
    """An (asynchronous) checkpoint save failed: disk full, permissions, a vanished directory."""


class CheckpointReadError(RuntimeError):
    """No checkpoint of a directory could be read (each unreadable one was moved aside)."""


class PreemptedError(RuntimeError):
    """The run stopped on a pre-emption signal after saving; rerunning continues it.

    ``gram-train`` exits with `gram_jax.cli.exit_codes.EXIT_PREEMPTED` (75) for it.
    """

    def __init__(self, step: int, directory):
        super().__init__(
            f"pre-empted at step {step}: saved {directory}/{step}; run the same command again "
            "to continue"
        )
        self.step = step


# ----------------------------------------------------------------------------- data iterator item
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
    """Save args: an iterator with `get_state()` returning a dict (DatasetIterator) or bytes."""

    item: Any


@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
    """Restore args: the iterator whose `set_state` receives the saved state."""

    item: Any


class IteratorHandler(ocp.CheckpointHandler):
    """Saves each process's iterator state to ``process_<i>-of-<n>.json``.

    Unlike grain's own handler it accepts any object with get_state/set_state (our pipeline may
    wrap grain's iterators), storing dict states as JSON and bytes states as text. A run with
    another process count gets the saved global position (`_state_for_new_process_count`).
    """

    def save(self, directory: epath.Path, args: IteratorSave):
        state = args.item.get_state()
        record = (
            {"kind": "bytes", "state": state.decode()}
            if isinstance(state, bytes)
            else {"kind": "json", "state": state}
        )
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (directory / name).write_text(json.dumps(record))

    def restore(self, directory: epath.Path, args: IteratorRestore):
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        path = directory / name
        if path.exists():
            record = json.loads(path.read_text())
        else:
            record = _state_for_new_process_count(directory, args.item)
        state = record["state"].encode() if record["kind"] == "bytes" else record["state"]
        args.item.set_state(state)
        return args.item

    def metadata(self, directory):
        return None

    def structure(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


class ProcessCountError(RuntimeError):
    """A checkpoint's data position cannot be continued with this run's process count (the
    checkpoint is intact: it is never moved aside for this)."""


_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def _state_for_new_process_count(directory: epath.Path, iterator) -> dict:
    """The saved iterator record to give this process when the checkpoint was written by another
    number of processes.

    An iterator whose state is the global position (``state_is_global``: the training
    TrainIterator stores the number of global batches consumed, the same on every process) takes
    the state every saving process wrote identically, so 2 -> 1 and 1 -> 2 processes continue at
    the same global batch. Anything else raises ProcessCountError in one line.
    """
    saved = {}
    for path in directory.iterdir():
        match = _PROCESS_FILE.fullmatch(path.name)
        if match:
            saved[int(match.group(1))] = (int(match.group(2)), path)
    counts = {count for count, _ in saved.values()}
    count = counts.pop() if len(counts) == 1 else 0
    if not saved or counts or sorted(saved) != list(range(count)):
        found = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{directory}: no complete set of data-iterator states (process_<i>-of-<n>.json); "
            f"found {found}"
        )
    records = [json.loads(saved[i][1].read_text()) for i in range(count)]
    now = jax.process_count()
    why = None
    if not getattr(iterator, "state_is_global", False):
        why = f"this data iterator ({type(iterator).__name__}) keeps a per-process position"
    elif any(r != records[0] for r in records) or records[0].get("kind") != "json":
        why = "the processes saved different positions"
    if why:
        raise ProcessCountError(
            f"{directory}: the data position was saved by {count} processes and this run has "
            f"{now} ({why}); resume it with {count} processes"
        )
    if jax.process_index() == 0:
        log.info("data position %s: saved by %d processes, continued by %d", directory, count, now)
    return records[0]


ocp.args.register_with_handler(IteratorHandler, for_save=True)(IteratorSave)
ocp.args.register_with_handler(IteratorHandler, for_restore=True)(IteratorRestore)


# ----------------------------------------------------------------------------- manager
def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
    """``W/checkpoints`` of a local or ``gs://`` workdir (see gram_jax.train.workdir)."""
    return workdir_paths.resolve(workdir) / "checkpoints"


@dataclasses.dataclass
class KeepNewestGood:
    """orbax preservation policy: never deletes the newest checkpoint at or below `bound_fn()`.

    The trainer passes the newest confirmed-good state (`gram_jax.train.guard.DivergenceGuard`),
    so retention (keep-N) cannot delete the last known-good checkpoint while newer, unconfirmed
    ones exist. `bound_fn()` returning None preserves nothing extra.
    """

    bound_fn: Callable[[], int | None]

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        bound = self.bound_fn()
        good = [c.step for c in checkpoints if bound is not None and c.step <= bound]
        newest = max(good) if good else None
        return [c.step == newest for c in checkpoints]


def make_manager(
    directory: str | pathlib.Path,
    *,
    keep: int = 3,
    asynchronous: bool = True,
    read_only=False,
    good_bound: Callable[[], int | None] | None = None,
) -> ocp.CheckpointManager:
    """An orbax CheckpointManager over `directory` with items state, data and config.

    Keeps the newest `keep` checkpoints plus, when given, the newest one at or below
    `good_bound()` (see KeepNewestGood).
    """
    if int(keep) < 1:
        raise ValueError(f"keep_checkpoints={keep}: must be >= 1 (0 would delete every save)")
    policies = [ocp.checkpoint_managers.LatestN(n=int(keep))]
    if good_bound is not None:
        policies.append(KeepNewestGood(good_bound))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=asynchronous,
        create=not read_only,
        read_only=read_only,
    )
    return ocp.CheckpointManager(
        epath.Path(directory), item_names=("state", "data", "config"), options=options
    )


def save(manager, step: int, state, data_iterator=None, config=None, *, force=False) -> bool:
    """Starts an (async) save of step `step`; returns whether a save was started."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = IteratorSave(data_iterator)
    if config is not None:
        items["config"] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
    return manager.save(int(step), args=ocp.args.Composite(**items), force=force)


def raise_save_errors(manager) -> bool:
    """Raises CheckpointWriteError (one line: directory and cause) if the last async save failed.

    Returns False while a save is still being written (check again later), True once it is done
    and fine. Cheap: the loop calls it every step after a save, so a full disk stops the run at
    the next step instead of one checkpoint interval later.
    """
    if manager.is_saving_in_progress():
        return False
    try:
        manager.check_for_errors()
        manager.wait_until_finished()  # the save thread has ended: returns at once or re-raises
    except Exception as exc:  # orbax re-raises the writer thread's error, often deeply wrapped
        raise CheckpointWriteError(
            f"saving a checkpoint to {manager.directory} failed: {one_line(exc)}"
        ) from exc
    return True


def wait_for_saves(manager) -> None:
    """Waits for the outstanding saves; a failed one raises CheckpointWriteError (one line)."""
    try:
        manager.wait_until_finished()
    except Exception as exc:
        raise CheckpointWriteError(
            f"saving a checkpoint to {manager.directory} failed: {one_line(exc)}"
        ) from exc


def one_line(exc: BaseException, limit: int = 240) -> str:
    """`exc` as one short line: the innermost cause's type and first message line; an OS error
    reported by tensorstore (``[os_error_code='28']``) as its strerror and the file."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
    text = str(seen)
    code = re.search(r"os_error_code='(\d+)'", text)
    if code:
        where = re.search(r'(?:Failed writing|Failed reading|local file):? "([^"]+)"', text)
        path = f" ({where.group(1)})" if where else ""
        return f"{os.strerror(int(code.group(1)))} [errno {code.group(1)}]{path}"[:limit]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = f"{type(seen).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def set_aside(directory: str | os.PathLike, step: int, reason: str) -> epath.Path:
    """Renames checkpoint `step` of `directory` (``W/checkpoints``) to
    ``W/checkpoints_set_aside/<step>.<reason>`` (``.1``, ``.2``... appended when taken); returns
    the new path. Never deletes a checkpoint (on an object store its objects are copied, then the
    originals removed)."""
    directory = workdir_paths.resolve(directory)
    aside = directory.parent / SET_ASIDE_DIR
    aside.mkdir(parents=True, exist_ok=True)
    target = aside / f"{step}.{reason}"
    n = 0
    while target.exists():
        n += 1
        target = aside / f"{step}.{reason}.{n}"
    workdir_paths.move(directory / str(step), target)
    return target


def saved_config(directory: str | os.PathLike, step: int) -> dict | None:
    """The run config saved with checkpoint `step` (its ``config`` item), or None."""
    path = workdir_paths.resolve(directory) / str(step) / "config" / "metadata"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def saved_run_config(directory: str | os.PathLike, step: int):
    """The run config saved with checkpoint `step` as a ConfigDict (its ``data`` section built
    again by ``data_pipelines.config.data_config``, which checks it), read by `saved_config`.

    Raises FileNotFoundError when that checkpoint saved no config.
    """
    import ml_collections  # noqa: PLC0415 (lazy: only the readers of a saved config need them)

    from data_pipelines.config import data_config  # noqa: PLC0415

    saved = saved_config(directory, step)
    if saved is None:
        raise FileNotFoundError(
            f"checkpoint {directory}/{step} saved no config; pass the experiment config"
        )
    config = ml_collections.ConfigDict(saved)
    with config.ignore_type():
        config.data = data_config(**saved["data"])
    return config


def abstract_like(state, shardings) -> Any:
    """ShapeDtypeStructs of `state` (arrays or ShapeDtypeStructs) carrying `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


def restore(manager, step: int | None, abstract_state, data_iterator=None):
    """Restores (state, data_iterator) of `step` (default: latest) onto the shardings of
    `abstract_state` (a pytree of ShapeDtypeStructs with .sharding)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    has_data = (epath.Path(manager.directory) / str(step) / "data").exists()
    if data_iterator is not None and has_data:
        items["data"] = IteratorRestore(data_iterator)
    elif data_iterator is not None:
        log.warning("checkpoint %s/%d has no data-iterator state", manager.directory, step)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], (restored["data"] if "data" in items else data_iterator)


def restore_subtree(directory: str | os.PathLike, step: int, abstract: Mapping) -> dict:
    """Restores only the entries of checkpoint `step`'s train state that `abstract` names (e.g.
    ``{'params': ..., 'model_state': ...}``, pytrees of ShapeDtypeStructs with .sharding): an
    orbax partial restore, so the rest (the optimizer moments, twice the parameters' size
    with Adam) is never read into memory.

    Raises FileNotFoundError when the checkpoint has no ``state`` item.
    """
    path = workdir_paths.resolve(directory) / str(step) / "state"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {directory}/{step}: no train state ({path})")
    args = ocp.args.PyTreeRestore(
        item=abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True,
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(path, args=args)


# ----------------------------------------------------------------------------- partial init
# The converted-weights file has one home (gram_jax.convert.params_file); these names stay
# importable from here for the trainer's callers.
load_param_file = params_file.load_param_file
merge_partial_params = params_file.merge_partial_params


def _cause_of_type(exc: BaseException, kind: type) -> BaseException | None:
    """`exc` or the first exception of its cause/context chain that is a `kind`, else None."""
    seen = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def restore_newest_intact(manager, abstract_state, data_iterator=None, *, set_aside_bad=True):
    """Restores the newest readable checkpoint of `manager`: returns (state, iterator, step), or
    None when the directory holds no checkpoint.

    A checkpoint that fails to read (truncated or missing array files, a broken iterator JSON, a
    state of another structure...) is moved aside with `set_aside` (when `set_aside_bad`; else only
    skipped), logged in one line naming its step and the cause, and the next older one is tried.
    Raises CheckpointReadError when checkpoints exist but none can be read.
    """
    tried = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, data_iterator = restore(manager, step, abstract_state, data_iterator)
            return state, data_iterator, step
        except Exception as exc:  # orbax raises many types (ValueError, OSError, XlaRuntimeError)
            refusal = _cause_of_type(exc, ProcessCountError)
            if refusal is not None:  # intact, but not for this process count: never set aside
                raise refusal from None
            cause = one_line(exc)
            tried.append(f"step {step}: {cause}")
            where = "left in place (read-only)"
            if set_aside_bad:
                if jax.process_index() == 0:
                    where = f"moved to {set_aside(manager.directory, step, 'unreadable')}"
                else:
                    where = "moved aside by process 0"
                parallel.barrier(f"gram_jax_set_aside_{step}")
                manager.reload()
            log.warning("checkpoint step %d is unreadable (%s); %s", step, cause, where)
    if tried:
        raise CheckpointReadError(
            f"{manager.directory}: no checkpoint could be read ({'; '.join(tried)})"
        )
    return None


def restore_or_initialize(
    manager,
    config,
    abstract_state,
    init_fn: Callable[[], Any],
    data_iterator=None,
) -> tuple[Any, Any, str]:
    """Applies the resume order. Returns (state, data_iterator, source) where source is one of
    'workdir:<step>', 'resume:<dir>:<step>', 'model_init:<path>', 'scratch'.

    Unreadable workdir checkpoints are moved aside and the next older one is used (see
    `restore_newest_intact`); when none is left, the resume order continues below the workdir.
    """
    try:
        found = restore_newest_intact(manager, abstract_state, data_iterator)
    except CheckpointReadError as exc:
        log.warning("%s; continuing with the rest of the resume order", exc)
        found = None
    if found is not None:
        state, data_iterator, step = found
        return state, data_iterator, f"workdir:{step}"
    if config.get("resume"):
        directory = workdir_paths.resolve(config.resume)
        if (directory / "checkpoints").is_dir():
            directory = directory / "checkpoints"
        if not directory.is_dir():
            raise FileNotFoundError(f"config.resume: {directory} is not a checkpoint directory")
        other = make_manager(directory, read_only=True)
        try:
            # Another run's directory: skip unreadable checkpoints, never rename them.
            found = restore_newest_intact(other, abstract_state, data_iterator, set_aside_bad=False)
        finally:
            other.close()
        if found is None:
            raise FileNotFoundError(f"config.resume: {directory} holds no checkpoint")
        state, data_iterator, step = found
        return state, data_iterator, f"resume:{directory}:{step}"
    state = init_fn()
    if config.get("model_init"):
        params, summary = params_file.init_from_file(
            state["params"],
            config.model_init,
            allow_missing=config.get("model_init_allow_missing", ()),
        )
        log.info("%s", summary)
        state = dict(state, params=params)
        return state, data_iterator, f"model_init:{config.model_init}"
    return state, data_iterator, "scratch"


# ----------------------------------------------------------------------------- pre-emption
class PreemptionWatcher:
    """Turns SIGTERM into a flag the step loop polls, so it saves and exits cleanly.

    Multi-process runs ask JAX's coordination service instead (every process must agree on the
    step at which all of them save, or the collective save would hang).
    """

    def __init__(self):
        self._flag = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self._flag.set()

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return bool(multihost_utils.reached_preemption_sync_point(int(step)))
            except RuntimeError:  # preemption service not enabled for this runtime
                return False
        return self._flag.is_set()

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
