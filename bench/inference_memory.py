"""Peak host memory of loading a checkpoint for inference: parameters only vs the full train state.

Writes one gram-train checkpoint (params, Adam moments, model state, saved config) of a mid-size
GRAM, then loads it in fresh processes, each reporting its peak resident memory (``VmHWM``)
after:

- ``imports``: the imports only (JAX, flax, orbax; the floor of both);
- ``train_state``: `Trainer` + `checkpoint.restore` of the whole train state (what inference did
  before `GramInference` held parameters only; what a resumed run reads);
- ``inference``: `GramInference.load` (EvalModel + a partial restore of params and model state).

    python bench/inference_memory.py [--size base] [--modalities text,audio]

JSON lines on stdout. CPU only is fine: the arrays live in host memory either way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, sys
import jax
from gram_jax import parallel
from gram_jax.train import checkpoint
what, workdir = sys.argv[1], sys.argv[2]
if what == "train_state":
    from gram_jax.config import prepare
    from gram_jax.train.state import Trainer
    directory = checkpoint.checkpoint_dir(workdir)
    config = prepare(checkpoint.saved_run_config(directory, 0), count_data=False)
    mesh = parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])
    manager = checkpoint.make_manager(directory, read_only=True)
    state, _ = checkpoint.restore(manager, 0, Trainer(config, mesh=mesh).abstract_state)
    jax.block_until_ready(state)
elif what == "inference":
    from gram_jax.inference import GramInference
    gram = GramInference.load(workdir)
    jax.block_until_ready(gram._params)
# VmHWM, not ru_maxrss: Linux carries a forking parent's ru_maxrss into the child.
status = open("/proc/self/status").read()
peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"what": what, "peak_rss_mb": peak_mb}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", help="gram_jax.models.config model size")
    parser.add_argument("--modalities", default="text,audio", help="model modalities")
    args = parser.parse_args()

    import jax  # noqa: PLC0415
    import ml_collections  # noqa: PLC0415

    from experiments import base_config  # noqa: PLC0415
    from gram_jax import parallel  # noqa: PLC0415
    from gram_jax.config import prepare  # noqa: PLC0415
    from gram_jax.models.config import model_config  # noqa: PLC0415
    from gram_jax.train import checkpoint  # noqa: PLC0415
    from gram_jax.train.state import Trainer  # noqa: PLC0415

    config = base_config.get_config("runlocal")
    config.model = model_config(args.size, tuple(args.modalities.split(",")))
    config.evals = ml_collections.ConfigDict()
    config = prepare(config, count_data=False)
    with tempfile.TemporaryDirectory() as workdir:
        mesh = parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])
        state = Trainer(config, mesh=mesh).init_state()
        count = sum(x.size for x in jax.tree.leaves(state["params"]))
        total = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
        manager = checkpoint.make_manager(checkpoint.checkpoint_dir(workdir))
        checkpoint.save(manager, 0, state, config=config, force=True)
        manager.wait_until_finished()
        manager.close()
        del state
        print(json.dumps(dict(size=args.size, parameters=count, train_state_mb=total / 2**20)))
        for what in ("imports", "train_state", "inference"):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, what, workdir],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
