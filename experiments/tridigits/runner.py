"""Train several seeds of one TriDigits config at once: the real train step, vmapped over seeds.

The sweep needs 4 folds x 5 seeds per method on 2 shared CPU cores. Each run is tiny, so a single
run spends most of its time in per-step dispatch; ``jax.vmap`` of the trainer's own jitted step
(``gram_jax.train.Trainer.train_step``: the same loss, optimizer, temperature and hard-negative
sampling as ``gram-train``) over a leading seed axis trains all seeds of a fold in one program,
compiled once per method. Seeds differ in initialisation, dropout, hard negatives and data order;
runs never share state.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class SeedBatchRunner:
    """Compiles one method's init, step and encoder once; trains any fold for a list of seeds."""

    def __init__(self, config):
        from gram_jax.models.gram import GramModel
        from gram_jax.train import Trainer
        from gram_jax.train_step import split_model

        self.config = config
        self.trainer = Trainer(config)
        tx = self.trainer.tx

        def init_one(seed):
            # Trainer._init_state with the seed as an argument (one compilation for all seeds).
            with nnx.use_eager_sharding(False):
                model = GramModel(config.model, rngs=nnx.Rngs(jax.random.key(seed)))
            _, params, rest = split_model(model)
            return dict(
                params=params,
                model_state=rest,
                opt_state=tx.init(params),
                step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.key(seed)),
            )

        self.init = jax.jit(jax.vmap(init_one))
        self.step = jax.jit(jax.vmap(self.trainer.train_step), donate_argnums=0)
        encode = self.trainer.encode_fn()
        self.encode = jax.jit(jax.vmap(lambda p, s, b: encode(p, s, b)[0], in_axes=(0, 0, None)))

    def train(self, data, fold: int, seeds: list[int], log=print) -> dict:
        """Train ``seeds`` on ``fold``; returns {'embeddings': {m: [S, N, D]}, 'labels', ...}.

        Args:
          data: an ``arrays.TriDigitsArrays``.
        """
        config = self.config
        batch_size, steps = config.data.batch_size, config.total_steps
        n_train = len(data.split(fold, "train")["label"])
        orders = []
        for seed in seeds:
            rng = np.random.default_rng([seed, fold, 7])
            epochs = -(-steps * batch_size // n_train)
            orders.append(np.concatenate([rng.permutation(n_train) for _ in range(epochs)]))
        start = time.time()
        state = self.init(jnp.asarray(seeds, jnp.int32))
        history = []
        for step in range(steps):
            rows = [o[step * batch_size : (step + 1) * batch_size] for o in orders]
            batches = [data.batch(fold, "train", r) for r in rows]
            stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
            state, metrics = self.step(state, stacked)
            if (step + 1) % max(steps // 10, 1) == 0 or step + 1 == steps:
                host = jax.device_get(metrics)
                if np.any(np.asarray(host["nonfinite"])):
                    raise FloatingPointError(
                        f"fold {fold} seeds {seeds}: non-finite loss at {step}"
                    )
                history.append({k: np.asarray(v).tolist() for k, v in host.items()})
                log(
                    f"fold {fold} step {step + 1}/{steps} loss "
                    f"{np.round(np.asarray(host['loss']), 3).tolist()} "
                    f"({time.time() - start:.0f} s)"
                )
        test = data.split(fold, "test")
        batch = data.batch(fold, "test", np.arange(len(test["label"])))
        embeddings = jax.device_get(self.encode(state["params"], state["model_state"], batch))
        temperature = None
        if "temperature" in history[-1]:
            temperature = history[-1]["temperature"]
        return dict(
            embeddings={m: np.asarray(v) for m, v in embeddings.items()},
            labels=np.asarray(test["label"]),
            history=history,
            temperature=temperature,
            seconds=time.time() - start,
        )
