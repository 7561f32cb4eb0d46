"""Two `jax.distributed` processes (4 CPU devices each) read disjoint shards that cover the data.

The pipeline takes the process layout from JAX (grain's ShardByJaxProcess); the global batch is
assembled with ``jax.make_array_from_process_local_data`` on an 8-device mesh.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from pipeline_fixtures import clip_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "pipeline_process_worker.py"

pytestmark = pytest.mark.media


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_read_disjoint_covering_shards(tmp_path, reference_data):
    layout = clip_dataset(tmp_path)
    msrvtt = reference_data / "annotations" / "msrvtt" / "descs_ret_test.json"
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--process-id",
                str(i),
                "--layout",
                json.dumps(layout),
                "--msrvtt",
                str(msrvtt),
                "--out",
                str(tmp_path / f"out{i}.json"),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text[-3000:]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [r["process_index"] for r in results] == [0, 1]

    # Evaluation: disjoint shards, together every one of the 1000 records exactly once.
    shards = [r["eval_valid_index"] for r in results]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(1000))
    assert results[0]["num_eval_batches"] == results[1]["num_eval_batches"] == 11

    # Training: 4 local rows each, disjoint; the global batch is both local batches in process
    # order and holds the 8 samples (4 clips x 2 captions) once each.
    local = [list(zip(r["local_index"], r["local_caption"], strict=True)) for r in results]
    assert len(local[0]) == len(local[1]) == 4 and not set(local[0]) & set(local[1])
    for r in results:
        assert r["global_shapes"]["video"] == [8, 2, 32, 32, 3]
        assert r["global_shapes"]["audio"] == [8, 1, 1024, 64]
        glob = list(zip(r["global_index"], r["global_caption"], strict=True))
        assert glob == local[0] + local[1]
        assert sorted(glob) == [(i, c) for i in range(4) for c in range(2)]
        assert r["local_rows_match"]
