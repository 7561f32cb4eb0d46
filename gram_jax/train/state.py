"""The train state of one run: the model built abstractly once, its shardings, the optimizer and the
jitted step (`Trainer`), and a fresh state for a seed (`init_train_state`).

The train state is a plain dict pytree (see `gram_jax.train.step`); `Trainer` holds everything
derived from the config once per run so the loop, the evaluators and the checkpoints share it.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from gram_jax import optim, parallel
from gram_jax.evaluators.model import EvalModel
from gram_jax.models.gram import build_model, split_model
from gram_jax.train import checkpoint
from gram_jax.train.step import make_train_step, term_names


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
        # Built once per run: every evaluation and the end-of-run report reuse its jitted
        # encoder and matching head (no recompilation per evaluation).
        self.eval_model = EvalModel(
            config,
            self.mesh,
            graphdef=self.graphdef,
            abstract_params=self.abstract_params,
            abstract_rest=self.abstract_rest,
        )

    def _init_state(self) -> dict:
        return init_train_state(self.config.model, self.tx, self.config.seed)

    def init_state(self) -> dict:
        """A fresh, sharded train state (initialised directly in its shardings)."""
        return jax.jit(self._init_state, out_shardings=self.state_sharding)()
