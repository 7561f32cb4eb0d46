"""Train several seeds of one TriDigits config at once: the real train step, vmapped over seeds.

The sweep needs 4 folds x 5 seeds per method on 2 shared CPU cores. Each run is tiny, so a single
run spends most of its time in per-step dispatch; ``jax.vmap`` of the trainer's own jitted step
(``gram_jax.train.Trainer.train_step``: the same loss, optimizer, temperature and hard-negative
sampling as ``gram-train``) over a leading seed axis trains all seeds of a fold in one program,
compiled once per method. Seeds differ in initialisation, dropout, hard negatives and data order;
runs never share state.

Initialisation follows ``gram-train``'s ``config.model_init``: the seed's fresh state, then the
parameters of a converted-weights file written over it (a partial file loads only its towers);
``train(init_files=...)`` gives each run a file of its own (a fine-tuning stage starting from each
run's own earlier stage), and ``train(save_params_dir=...)`` writes each run's final parameters in
the format ``config.model_init`` reads.
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.convert import params_file
from gram_jax.train import Trainer, init_train_state
from gram_jax.train.guard import NonFiniteLossError, check_finite


def _path(key_path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in key_path)


def _like(tree, template):
    """``tree``'s leaves in ``template``'s structure, matched by path string."""
    by_path = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    return jax.tree_util.tree_map_with_path(lambda p, _: by_path[_path(p)], template)


class SeedBatchRunner:
    """Compiles one method's init, step and encoder once; trains any fold for a list of seeds."""

    def __init__(self, config):
        config = prepare(config)
        self.config = config
        # One device: the runs axis takes the place of data parallelism (and the states built by
        # `init` below live on the default device, as this mesh's shardings say).
        self.trainer = Trainer(config, mesh=parallel.make_mesh(config.mesh, jax.devices()[:1]))
        tx = self.trainer.tx
        # The trainer's initial state with the seed as an argument: one compilation for all seeds.
        # One sharding for every state leaf, in and out of the step: with the shardings the init
        # and the step would each choose, the second step's input differs from the first's and
        # the step compiles twice (minutes each on a busy CPU).
        self.one = one = parallel.replicated(self.trainer.mesh)
        self.init = jax.jit(
            jax.vmap(lambda seed: init_train_state(config.model, tx, seed)), out_shardings=one
        )
        self.step = jax.jit(jax.vmap(self.trainer.train_step), donate_argnums=0, out_shardings=one)
        encode = self.trainer.eval_model.encode
        # Each run encodes its own fold's test set (padded to one size): every argument is mapped.
        self.encode = jax.jit(jax.vmap(lambda p, s, b: encode(p, s, b)[0]))

    def train(
        self,
        data,
        runs: list[tuple[int, int]],
        log=print,
        *,
        eval_splits: tuple[str, ...] = ("test",),
        eval_steps: tuple[int, ...] = (),
        on_eval=None,
        train_split: str = "train",
        init_files: list | None = None,
        save_params_dir: str | pathlib.Path | None = None,
    ) -> list[dict]:
        """Train every (fold, seed) of ``runs`` together; one result dict per run.

        Args:
          data: an ``arrays.TriDigitsArrays``.
          runs: (fold, seed) pairs; each run reads its own fold's training records in its own
            seeded order and is evaluated on its own fold's ``eval_splits``.
          eval_splits: the fold splits embedded after training (and at ``eval_steps``).
          eval_steps: steps after which the splits are also embedded (learning curves); each
            evaluation calls ``on_eval(step, split, run_index, embeddings, labels)``.
          train_split: the split each run trains on (``arrays.TriDigitsArrays.split`` names).
          init_files: one converted-weights file (or None) per run, written over its fresh
            state as ``config.model_init`` is; default: ``config.model_init`` for every run.
          save_params_dir: where each run's final parameters go, as
            ``<dir>/fold<k>_seed<s>/params`` (an orbax tree ``config.model_init`` reads).
        Returns:
          [{'fold', 'seed', 'splits': {split: {'embeddings': {m: float32[N, D]}, 'labels':
          int32[N]}}, 'history', 'seconds', 'seconds_per_step', 'init', 'params_file'}], the
          splits embedded after the last step; 'seconds_per_step': wall time per step of all
          runs together after the first (which compiles), evaluations along training included;
          'init' the file each run started from (or None); 'params_file' the written
          parameters (or None).
        """
        config = self.config
        batch_size, steps = config.data.batch_size, config.total_steps
        orders = []
        for fold, seed in runs:
            n_train = len(data.split(fold, train_split)["label"])
            rng = np.random.default_rng([seed, fold, 7])
            epochs = -(-steps * batch_size // n_train)
            orders.append(np.concatenate([rng.permutation(n_train) for _ in range(epochs)]))
        start = time.time()
        state = self.init(jnp.asarray([seed for _, seed in runs], jnp.int32))
        if init_files is None:
            init_files = [self.config.get("model_init") or None] * len(runs)
        if len(init_files) != len(runs):
            raise ValueError(f"init_files: {len(init_files)} files for {len(runs)} runs")
        if any(init_files):
            params = self._load_params(state["params"], init_files, log)
            state = dict(state, params=jax.device_put(params, self.one))
        history = []
        for step in range(steps):
            batches = [
                data.batch(fold, train_split, order[step * batch_size : (step + 1) * batch_size])
                for (fold, _), order in zip(runs, orders, strict=True)
            ]
            stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
            state, metrics = self.step(state, stacked)
            if step == 0:
                # The first step compiles; the steady cost is timed from its end.
                jax.block_until_ready(state)
                after_first = time.time()
            if (step + 1) % max(steps // 10, 1) == 0 or step + 1 == steps:
                host = jax.device_get(metrics)
                for i, run in enumerate(runs):
                    try:
                        check_finite(
                            [(step, {k: v[i] for k, v in host.items()})], self.trainer.term_names
                        )
                    except NonFiniteLossError as err:
                        raise NonFiniteLossError(f"run (fold, seed) = {run}: {err}") from err
                history.append(
                    {"step": step + 1, **{k: np.asarray(v).tolist() for k, v in host.items()}}
                )
                log(
                    f"step {step + 1}/{steps} mean loss {float(np.mean(host['loss'])):.3f} "
                    f"({time.time() - start:.0f} s)"
                )
            if step + 1 in eval_steps and step + 1 != steps and on_eval is not None:
                for split in eval_splits:
                    for i, (emb, labels) in enumerate(self.embed(data, runs, state, split)):
                        on_eval(step + 1, split, i, emb, labels)
        jax.block_until_ready(state)
        steady = (time.time() - after_first) / (steps - 1) if steps > 1 else None
        final = {split: self.embed(data, runs, state, split) for split in eval_splits}
        if on_eval is not None:
            for split, per_run in final.items():
                for i, (emb, labels) in enumerate(per_run):
                    on_eval(steps, split, i, emb, labels)
        saved = [None] * len(runs)
        if save_params_dir is not None:
            saved = self.save_params(state, runs, save_params_dir)
        results = []
        for i, (fold, seed) in enumerate(runs):
            results.append(
                dict(
                    fold=fold,
                    seed=seed,
                    splits={
                        split: {"embeddings": per_run[i][0], "labels": per_run[i][1]}
                        for split, per_run in final.items()
                    },
                    history=[
                        {k: (v if k == "step" else v[i]) for k, v in h.items()} for h in history
                    ],
                    seconds=time.time() - start,
                    seconds_per_step=steady,
                    init=None if init_files[i] is None else str(init_files[i]),
                    params_file=None if saved[i] is None else str(saved[i]),
                )
            )
        return results

    def _load_params(self, params, files, log) -> dict:
        """The stacked params [R, ...] with run i's file written over run i's slice, as
        ``config.model_init`` is (`params_file.init_from_file`: names and shapes checked, every
        parameter loaded or allowed by ``config.model_init_allow_missing``)."""
        allow = self.config.get("model_init_allow_missing", ())
        per_run = []
        for i, path in enumerate(files):
            own = jax.tree.map(lambda x, i=i: x[i], params)
            if path is None:
                per_run.append(own)
                continue
            merged, summary = params_file.init_from_file(own, path, allow_missing=allow)
            # The merged tree's keys are strings ('0' for a layer index 0): back to the model's
            # own keys, or the step's shardings (keyed like the model) would not match it.
            merged = _like(merged, own)
            if i == 0 or path != files[i - 1]:
                log(summary)
            per_run.append(merged)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *per_run)

    @staticmethod
    def save_params(state, runs, out_dir) -> list[pathlib.Path]:
        """Writes run i's parameters to ``<out_dir>/fold<k>_seed<s>/params``; returns the paths."""
        host = jax.device_get(state["params"])
        paths = []
        for i, (fold, seed) in enumerate(runs):
            own = jax.tree.map(lambda x, i=i: np.asarray(x[i]), host)
            run_dir = pathlib.Path(out_dir) / f"fold{fold}_seed{seed}"
            paths.append(params_file.save_params(own, run_dir))
        return paths

    def embed(self, data, runs, state, split: str) -> list[tuple[dict, np.ndarray]]:
        """[(embeddings {m: float32[N, D]}, labels int32[N])] of each run on its fold's split."""
        # Splits differ in size per fold: pad each to the largest, drop the padding after.
        tables = [data.split(fold, split) for fold, _ in runs]
        size = max(len(t["label"]) for t in tables)
        chunk = 512  # bounds the memory of one vmapped encoder call
        parts = []
        rows = [np.resize(np.arange(len(t["label"])), size) for t in tables]
        for lo in range(0, size, chunk):
            batches = [
                data.batch(fold, split, r[lo : lo + chunk])
                for (fold, _), r in zip(runs, rows, strict=True)
            ]
            stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
            parts.append(
                jax.device_get(self.encode(state["params"], state["model_state"], stacked))
            )
        out = []
        for i, table in enumerate(tables):
            n = len(table["label"])
            emb = {m: np.concatenate([p[m][i] for p in parts])[:n] for m in parts[0]}
            out.append((emb, np.asarray(table["label"])))
        return out
