"""Runs `train_and_evaluate` on the runlocal config in a fresh process (for the multi-device,
multi-process and resume tests) and writes the final parameters to an .npz file.

Usage: python tests/train_worker.py --workdir W --out params.npz [--steps N] [--mesh D,F,M]
       [--coordinator HOST:PORT --num-processes N --process-id I] [--set key=value ...]

The device count comes from XLA_FLAGS, set by the caller before this process starts.
"""

from __future__ import annotations

import argparse
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mesh", default="-1,1,1")
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="dotted.key=python literal")
    args = parser.parse_args()

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from experiments import base_config
    from gram_jax.train import train_and_evaluate

    config = base_config.get_config("runlocal")
    config.total_steps = args.steps
    data, fsdp, model = (int(x) for x in args.mesh.split(","))
    config.mesh.update(dict(data=data, fsdp=fsdp, model=model))
    if args.coordinator:
        config.distributed.update(
            dict(
                coordinator_address=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
            )
        )
    for item in args.set:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = ast.literal_eval(value)
    state = train_and_evaluate(config, args.workdir)
    params = multihost_utils.process_allgather(state["params"], tiled=True)
    if jax.process_index() == 0:
        np.savez(args.out, **{k: np.asarray(v) for k, v in _flat(params).items()})


if __name__ == "__main__":
    main()
