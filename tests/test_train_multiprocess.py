"""Two `jax.distributed` processes on CPU (4 devices each) train exactly like one process."""

import pathlib
import socket
import subprocess
import sys

import jax_cache
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "train_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return jax_cache.subprocess_env(devices, ROOT)


def test_two_processes_equal_one_process(tmp_path):
    # runlocal's 4 steps, no evaluation; 8 devices either way, the batch of 4 split over data=4
    # (the single-process program is the one tests/test_train.py compiles: a cache hit).
    steps, mesh = 4, "4,1,2"
    single = tmp_path / "single.npz"
    subprocess.run(
        [
            sys.executable,
            str(WORKER),
            "--workdir",
            str(tmp_path / "w1"),
            "--out",
            str(single),
            "--steps",
            str(steps),
            "--mesh",
            mesh,
            "--set",
            "evals={}",
        ],
        env=_env(8),
        check=True,
        cwd=ROOT,
        timeout=1200,
    )
    port = _free_port()
    multi = tmp_path / "multi.npz"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--workdir",
                str(tmp_path / "w2"),
                "--out",
                str(multi),
                "--steps",
                str(steps),
                "--mesh",
                mesh,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--set",
                "evals={}",
            ],
            env=_env(4),
            cwd=ROOT,
        )
        for i in range(2)
    ]
    try:
        codes = [p.wait(timeout=1200) for p in procs]
    finally:
        for p in procs:  # never leave a half of the pair waiting for its peer
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    a, b = np.load(single), np.load(multi)
    assert sorted(a.files) == sorted(b.files) and a.files
    for key in a.files:
        np.testing.assert_allclose(b[key], a[key], rtol=2e-5, atol=2e-6, err_msg=key)
