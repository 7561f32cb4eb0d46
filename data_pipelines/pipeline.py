"""The Grain graph: plan -> per-process shard -> decode/tokenize -> batch -> workers -> prefetch.

    plan (TrainPlan / EvalPlan: which sample goes where, seeded per epoch, disjoint per process)
      -> grain.MapDataset.source(plan)
      -> .map(LoadSample)            decode media (raw files or prepared ArrayRecord) + tokenize
      -> .batch(per_process_batch)   drop_remainder in training, padded in evaluation
      -> .to_iter_dataset(ReadOptions(read_threads, prefetch_buffer_size))
      -> .mp_prefetch(worker_count)  (0 = decode in this process)

Every random draw of a sample derives from (seed, epoch, sample) alone (transforms.sample_rngs), not
from worker or thread identity. The training iterator's state is the global step (TrainIterator):
restoring it mid-epoch continues with exactly the same batches, with or without workers, and even
on another number of processes or workers.

Layout of a global batch: global batch ``b`` of an epoch covers plan positions ``[b*G, (b+1)*G)``;
process ``p`` of ``P`` reads rows ``[b*G + p*G/P, b*G + (p+1)*G/P)``, the rows
``jax.make_array_from_process_local_data`` places on its devices. Shards are disjoint by
construction and, in evaluation, cover every sample exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import grain
import ml_collections
import numpy as np

from data_pipelines import samples, transforms
from data_pipelines.config import validate_config

#: Plan item of an evaluation padding row (no sample; the batch row gets valid=False).
PAD = -1


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """Explicit (index, count), or the JAX process layout through grain's ShardByJaxProcess."""
    if process_index is None or process_count is None:
        if process_index is not None or process_count is not None:
            raise ValueError("pass both process_index and process_count, or neither")
        options = grain.sharding.ShardByJaxProcess()
        process_index, process_count = options.shard_index, options.shard_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return process_index, process_count


def _per_process_batch(global_batch: int, process_count: int, key: str) -> int:
    if global_batch % process_count:
        raise ValueError(
            f"data config key {key!r}: the global batch {global_batch} is not divisible by the "
            f"process count {process_count}"
        )
    return global_batch // process_count


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Random-access plan of the training stream of one process.

    Item ``j`` is ``int64[3] = (sample, epoch, position)``: ``sample`` indexes the split's flat
    (record, caption) list, ``position`` is its place in the epoch's permutation. Each epoch keeps
    ``steps_per_epoch * global_batch`` samples of a fresh permutation (drop remainder per epoch).
    ``start_step`` skips that many global steps (where a restored iterator resumes).
    """

    num_samples: int
    global_batch: int
    process_index: int
    process_count: int
    seed: int
    shuffle: bool
    num_epochs: int | None
    start_step: int = 0

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def __len__(self) -> int:
        if self.num_epochs is None:
            return sys.maxsize  # grain's own marker of an endless dataset
        steps = self.num_epochs * self.steps_per_epoch - self.start_step
        return max(0, steps) * self.local_batch

    def permutation(self, epoch: int) -> np.ndarray:
        """int64[num_samples]: the order of ``epoch`` (identity when shuffling is off)."""
        return _permutation(self.num_samples, self.seed, epoch, self.shuffle)

    def __getitem__(self, j: int) -> np.ndarray:
        step, row = divmod(int(j), self.local_batch)
        epoch, batch_in_epoch = divmod(step + self.start_step, self.steps_per_epoch)
        position = batch_in_epoch * self.global_batch + self.process_index * self.local_batch + row
        sample = self.permutation(epoch)[position]
        return np.array([sample, epoch, position], np.int64)


@functools.lru_cache(maxsize=4)
def _permutation(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    # SeedSequence mixes (seed, epoch) so neighbouring seeds give unrelated orders.
    return np.random.default_rng([seed, epoch]).permutation(num_samples).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """Evaluation order of one process: every sample once, in order, padded to full batches.

    Item ``j`` is ``int64[3] = (sample or PAD, 0, position)``; positions past the end are padding.
    """

    num_samples: int
    global_batch: int
    process_index: int
    process_count: int

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count

    @property
    def num_batches(self) -> int:
        return -(-self.num_samples // self.global_batch)

    def __len__(self) -> int:
        return self.num_batches * self.local_batch

    def __getitem__(self, j: int) -> np.ndarray:
        step, row = divmod(int(j), self.local_batch)
        position = step * self.global_batch + self.process_index * self.local_batch + row
        sample = position if position < self.num_samples else PAD
        return np.array([sample, 0, position], np.int64)


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
    return grain.ReadOptions(
        num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_buffer_size
    )


def _assemble(plan, load: transforms.LoadSample, config, *, drop_remainder: bool):
    ds = grain.MapDataset.source(plan).map(load)
    ds = ds.batch(plan.local_batch, drop_remainder=drop_remainder)
    ds = ds.to_iter_dataset(_read_options(config))
    if config.worker_count > 0:
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return ds


class TrainIterator:
    """Iterator of one process's training batches whose state is the global step.

    ``get_state()`` is ``{"step": k, ...}``: the number of global batches consumed, plus the
    values that fix the sample order (checked on restore). Because every process reads the rows
    ``[k*G + p*G/P, ...)`` of global batch ``k``, the state does not depend on the process count
    or the worker count: a run saved with 2 workers on 4 hosts resumes exactly on 1 host with
    none. ``set_state`` rebuilds the Grain pipeline to start at that step (workers restart then).
    """

    # The state is the global position, the same on every process: a checkpoint handler may give
    # it to a run with another process count (gram_jax.train.checkpoint).
    state_is_global = True

    def __init__(self, plan: TrainPlan, load: transforms.LoadSample, config, split: str):
        self._plan, self._load, self._config, self._split = plan, load, config, split
        self._step = plan.start_step
        self._it = None

    def _order(self) -> dict:
        p = self._plan
        return {
            "split": self._split,
            "num_samples": p.num_samples,
            "global_batch": p.global_batch,
            "seed": p.seed,
            "shuffle": p.shuffle,
        }

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:  # lazy: set_state right after construction spawns workers once
            plan = dataclasses.replace(self._plan, start_step=self._step)
            self._it = iter(_assemble(plan, self._load, self._config, drop_remainder=True))
        batch = next(self._it)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        """JSON-able ``{"step", "split", "num_samples", "global_batch", "seed", "shuffle"}``."""
        return {"step": self._step, **self._order()}

    def set_state(self, state: dict) -> None:
        """Continues after ``state["step"]`` global batches; raises ValueError when ``state`` was
        saved for another sample order (other annotations, batch size, seed or shuffle)."""
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"training iterator state: expected a dict with 'step', got {state!r}")
        differ = {k: (state.get(k), v) for k, v in self._order().items() if state.get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"training iterator state was saved for another sample order ({detail}); "
                "it cannot continue on the same samples"
            )
        self.close()
        self._step = int(state["step"])

    def close(self) -> None:
        """Stops the worker processes (if any); the next ``next()`` starts them again."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None


def _train_parts(config, process_index, process_count, split):
    validate_config(config)
    process_index, process_count = _process_layout(process_index, process_count)
    _per_process_batch(config.batch_size, process_count, "batch_size")
    split_data = samples.load_split(config, split)
    if len(split_data) < config.batch_size:
        raise ValueError(
            f"split {split!r} ({split_data.annotation_path}) has {len(split_data)} samples, fewer "
            f"than one global batch (batch_size={config.batch_size}); nothing to train on"
        )
    plan = TrainPlan(
        num_samples=len(split_data),
        global_batch=config.batch_size,
        process_index=process_index,
        process_count=process_count,
        seed=config.seed,
        shuffle=config.shuffle,
        num_epochs=config.num_epochs,
    )
    return plan, transforms.LoadSample.from_config(config, split_data, train=True)


def make_train_iterator(
    config: ml_collections.ConfigDict,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    split: str = "train",
) -> TrainIterator:
    """Iterator of this process's training batches (contract: docs/contracts.md, 'Batch').

    Yields dicts of numpy arrays with ``config.batch_size / process_count`` rows. Its
    ``get_state()`` / ``set_state(state)`` save and restore the exact position as a JSON-able dict
    (see TrainIterator; valid for any process and worker count). ``process_index/process_count``
    default to the JAX process layout (``grain.sharding.ShardByJaxProcess``).
    """
    plan, load = _train_parts(config, process_index, process_count, split)
    return TrainIterator(plan, load, config, split)


def eval_dataset(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """The evaluation ``IterDataset`` of this process (see make_eval_iterator)."""
    validate_config(config)
    process_index, process_count = _process_layout(process_index, process_count)
    _per_process_batch(config.eval_batch_size, process_count, "eval_batch_size")
    split_data = samples.load_split(config, split)
    plan = EvalPlan(
        num_samples=len(split_data),
        global_batch=config.eval_batch_size,
        process_index=process_index,
        process_count=process_count,
    )
    load = transforms.LoadSample.from_config(config, split_data, train=False)
    return _assemble(plan, load, config, drop_remainder=False)


def make_eval_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """Iterator over every sample of ``split`` exactly once, in annotation order.

    All processes yield the same number of batches of ``eval_batch_size / process_count`` rows;
    rows past the end are padding (``valid=False``, ``index=-1``, zeros, ``present_<m>=False``),
    never duplicates. The valid rows of all processes together are each sample exactly once.
    """
    return iter(
        eval_dataset(config, split, process_index=process_index, process_count=process_count)
    )


def steps_per_epoch(config: ml_collections.ConfigDict, split: str = "train") -> int:
    """Global training steps of one epoch (remainder dropped), read from the annotations."""
    return len(samples.load_split(config, split)) // config.batch_size


def num_eval_batches(config: ml_collections.ConfigDict, split: str) -> int:
    """Batches the evaluation iterator of ``split`` yields (the last one padded)."""
    return -(-len(samples.load_split(config, split)) // config.eval_batch_size)
