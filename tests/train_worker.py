"""Runs `train_and_evaluate` on the runlocal config in a fresh process (for the multi-device,
multi-process and resume tests) and writes the final parameters to an .npz file.

Usage: python tests/train_worker.py --workdir W --out params.npz [--steps N] [--mesh D,F,M]
       [--coordinator HOST:PORT --num-processes N --process-id I] [--set key=value ...]

The device count comes from XLA_FLAGS, set by the caller before this process starts.
"""

from __future__ import annotations

import argparse
import ast

import jax
import numpy as np
from flax.traverse_util import flatten_dict
from jax.experimental import multihost_utils

from experiments import base_config
from gram_jax.train import train_and_evaluate


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
    config.update_from_flattened_dict(
        {key: ast.literal_eval(value) for key, value in (item.split("=", 1) for item in args.set)}
    )
    state = train_and_evaluate(config, args.workdir)
    params = multihost_utils.process_allgather(state["params"], tiled=True)
    if jax.process_index() == 0:
        np.savez(args.out, **{k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()})


if __name__ == "__main__":
    main()
