"""The SLURM recipe of docs/scaling.md starts a 2-process run with no distributed flag (JAX's own
cluster detection), and a run resumes on another process count at the same global batch.

The `srun` line of the recipe runs as written (bash expands its "$CONFIG" "$WORKDIR" "$@") in 2
local processes with the variables `srun` sets for 2 tasks on one node, 4 CPU devices each. The
runlocal config with the mesh and batch of tests/test_train_multiprocess.py, so the programs are
the ones the other trainer tests compile (shared persistent cache).
"""

from __future__ import annotations

import pathlib
import re
import shutil
import socket
import subprocess

import jax
import jax_cache
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
CONFIG = f"{ROOT / 'experiments' / 'base_config.py'}:runlocal"
STEPS = 4
# The recipe's "$@": runlocal's 4 steps (checkpoints at 2 and 4), a mesh of the 8 devices either
# way (the batch of 4 over data=4), no evaluation.
OVERRIDES = ("--config.mesh.data=4", "--config.mesh.model=2", "--config.evals={}")
TIMEOUT_S = 1500
# SlurmCluster (jax._src.clusters) puts the coordinator on this port range, from the job id.
SLURM_PORT_BASE, SLURM_PORTS = 65536 - 4096, 4096


def srun_command() -> str:
    """What each task runs: the `srun` line of the SLURM recipe, without `srun`."""
    section = DOC.read_text().split("## An 8-GPU node with SLURM", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```bash\n(#!/bin/bash\n.*?)```", section, re.S).group(1)
    (line,) = [ln for ln in script.splitlines() if ln.startswith("srun ")]
    return line.removeprefix("srun ")


def _slurm_job_id() -> int:
    """A job id whose coordinator port (jax's SlurmCluster rule) is free now."""
    for offset in np.random.default_rng().permutation(SLURM_PORTS):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", SLURM_PORT_BASE + int(offset)))
            except OSError:
                continue
        return 7 * SLURM_PORTS + int(offset)
    raise RuntimeError("no free port for the SLURM coordinator")


def _env(devices: int, workdir: pathlib.Path, slurm: dict | None = None) -> dict:
    env = jax_cache.subprocess_env(devices, ROOT)
    for name in list(env):  # a test run inside a real cluster job must not join it
        if name.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_")) or name.startswith(
            "JAX_COORDINATOR"
        ):
            del env[name]
    env.update(CONFIG=CONFIG, WORKDIR=str(workdir), **(slurm or {}))
    return env


def _bash(env: dict):
    return subprocess.Popen(
        ["bash", "-c", srun_command(), "bash", *OVERRIDES],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_one_process(workdir: pathlib.Path) -> str:
    """The recipe's command as one process with 8 devices (a workstation); returns its log."""
    proc = _bash(_env(8, workdir))
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out[-4000:]
    return out


def run_slurm_job(workdir: pathlib.Path) -> list[str]:
    """The recipe's command as 2 tasks of one SLURM job step on this host (4 devices each)."""
    job_id = _slurm_job_id()
    procs = []
    for rank in range(2):
        slurm = {
            "SLURM_JOB_ID": str(job_id),
            "SLURM_JOBID": str(job_id),
            "SLURM_STEP_ID": "0",
            "SLURM_NTASKS": "2",
            "SLURM_NPROCS": "2",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_NNODES": "1",
            "SLURM_STEP_NUM_NODES": "1",
            "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_STEP_TASKS_PER_NODE": "2",
            "SLURM_TASKS_PER_NODE": "2",
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_NODELIST": "localhost",
        }
        procs.append(_bash(_env(4, workdir, slurm)))
    try:
        outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:  # never leave half of the pair waiting for its peer
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outs


def final_params(workdir: pathlib.Path, step: int = STEPS) -> dict[str, np.ndarray]:
    path = workdir / "checkpoints" / str(step) / "state"
    meta = ocp.PyTreeCheckpointer().metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    params = ocp.PyTreeCheckpointer().restore(path, restore_args=restore_args)["params"]
    return {
        "/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:  # summation order differs between 1 and 2 processes
        np.testing.assert_allclose(b[key], a[key], rtol=2e-5, atol=2e-6, err_msg=key)


def resume_copy(source: pathlib.Path, target: pathlib.Path, step: int = 2) -> pathlib.Path:
    """`source`'s workdir as it was when checkpoint `step` was its newest (later ones removed)."""
    shutil.copytree(source, target)
    for path in (target / "checkpoints").iterdir():
        if path.name.isdigit() and int(path.name) > step:
            shutil.rmtree(path)
    (target / "metrics.jsonl").unlink(missing_ok=True)  # its later records would be rewritten
    return target


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A one-process run and a 2-task SLURM run of the recipe, to the end (4 steps)."""
    tmp = tmp_path_factory.mktemp("cluster")
    single, slurm = tmp / "single", tmp / "slurm"
    out = run_one_process(single)
    assert "jax.distributed from" not in out, "a single process must not start the runtime"
    outs = run_slurm_job(slurm)
    for rank, out in enumerate(outs):
        assert f"jax.distributed from cluster slurm (2 processes): process {rank} of 2" in out, out
    return {"single": single, "slurm": slurm, "tmp": tmp}


def test_recipe_has_one_srun_line():
    assert srun_command().startswith("gram-train ")


def test_slurm_job_starts_without_flags_and_equals_one_process(runs):
    assert_same_params(final_params(runs["single"]), final_params(runs["slurm"]))


@pytest.mark.slow
def test_two_processes_resume_on_one(runs):
    workdir = resume_copy(runs["slurm"], runs["tmp"] / "two_to_one")
    out = run_one_process(workdir)
    assert "starting at step 2 from workdir:2" in out, out[-4000:]
    assert "saved by 2 processes, continued by 1" in out, out[-4000:]
    assert not (workdir / "checkpoints_set_aside").exists()
    assert_same_params(final_params(runs["single"]), final_params(workdir))


@pytest.mark.slow
def test_one_process_resumes_on_two(runs):
    workdir = resume_copy(runs["single"], runs["tmp"] / "one_to_two")
    outs = run_slurm_job(workdir)
    for out in outs:
        assert "starting at step 2 from workdir:2" in out, out[-4000:]
    assert "saved by 1 processes, continued by 2" in outs[0], outs[0][-4000:]
    assert not (workdir / "checkpoints_set_aside").exists()
    assert_same_params(final_params(runs["single"]), final_params(workdir))
