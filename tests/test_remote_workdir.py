"""``--workdir gs://bucket/run``: every workdir file goes to the bucket, none to a local ``gs:``.

A local GCS emulator (tests/gcs_emulator.py) stands in for the bucket; the code under test reaches
it only through the standard emulator variables. The fast tests cover what an object store does
differently (no append, folders that are only name prefixes, so renames are copies) and the
other run inputs that take gs:// (config.model_init weights, data.prepared_dir shards); the slow one
is the journey of docs/scaling.md's "Workdirs on GCS": its ``gram-train`` command, killed with
``kill -9`` after a checkpoint and run again, ends with the parameters of an uninterrupted run, and
its ``gram-eval`` command writes its results to the bucket.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import gcs_emulator
import gcsfs
import jax
import jax_cache
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from pipeline_fixtures import clip_dataset, small_config
from test_train import _leaves

from data_pipelines import pipeline, prepare
from gram_jax.cli import exit_codes
from gram_jax.config import resume as resume_check
from gram_jax.config.resume import ResumeConfigError
from gram_jax.convert import params_file
from gram_jax.train import checkpoint, metric_writers
from gram_jax.train import workdir as workdir_paths

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
STEPS = 10
# The trainer tests' program (8 CPU devices, data=4 x model=2, 10 steps): compiled-cache hits.
TRAIN_FLAGS = (
    f"--config.total_steps={STEPS}",
    "--config.checkpoint_steps=1",
    "--config.async_checkpoints=False",
    "--config.mesh.data=4",
    "--config.mesh.model=2",
    "--config.best_metric=reference_clips/t2d/R@1",
)


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator.emulator() as emu, pytest.MonkeyPatch.context() as patch:
        for key, value in emu.env.items():
            patch.setenv(key, value)
        # gcsfs caches its file-system objects (and the endpoint they were made with).
        gcsfs.GCSFileSystem.clear_instance_cache()
        yield emu
        gcsfs.GCSFileSystem.clear_instance_cache()


def _no_local_gs_folder(*roots: pathlib.Path) -> None:
    for root in roots:
        found = [p for p in [root, *root.rglob("*")] if p.name == "gs:"]
        assert not found, f"a local folder named 'gs:' was created: {found}"


def test_resolve_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(workdir_paths.resolve("gs://bucket/run")) == "gs://bucket/run"
    assert str(checkpoint.checkpoint_dir("gs://bucket/run")) == "gs://bucket/run/checkpoints"
    assert workdir_paths.resolve("run") == epath.Path(tmp_path / "run")
    assert workdir_paths.is_remote("gs://bucket/run") and not workdir_paths.is_remote("run")
    _no_local_gs_folder(tmp_path)


@pytest.mark.parametrize("absent", ["gcsfs", "google.cloud.storage"])
def test_gs_path_without_the_gcs_extra_names_it(absent, monkeypatch):
    """The GCS clients are the `gcs` extra, not the base install: without one, a gs:// path is
    refused up front with the module and the pip line (None in sys.modules: import fails)."""
    monkeypatch.setitem(sys.modules, absent, None)
    with pytest.raises(ImportError, match=rf"gs://b/run: gs:// paths need {absent}.*\[gcs\]") as e:
        workdir_paths.resolve("gs://b/run")
    assert exit_codes.exit_code_for(e.value) == exit_codes.EXIT_REFUSED  # one line, exit code 2
    assert str(workdir_paths.resolve("run")).startswith("/")  # local paths need no client


def test_metrics_append_and_checkpoint_set_aside_on_gcs(gcs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = f"gs://{gcs.bucket}/unit"
    # metrics.jsonl: each record is appended (GCS has no append: read and rewritten).
    for step in (1, 2):
        metric_writers.append_jsonl(f"{run}/metrics.jsonl", {"step": step})
    lines = gcs.read("unit/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]

    # An unreadable checkpoint is moved aside: every object copied, the original gone.
    for name in ("state/_METADATA", "data/process_0-of-1.json", "commit_success.txt"):
        (workdir_paths.resolve(run) / "checkpoints" / "3" / name).write_text(name)
    target = checkpoint.set_aside(checkpoint.checkpoint_dir(run), 3, "unreadable")
    assert str(target) == f"{run}/checkpoints_set_aside/3.unreadable"
    assert gcs.objects("unit/checkpoints/") == []
    assert gcs.objects("unit/checkpoints_set_aside/") == [
        f"unit/checkpoints_set_aside/3.unreadable/{n}"
        for n in ("commit_success.txt", "data/process_0-of-1.json", "state/_METADATA")
    ]
    assert gcs.read("unit/checkpoints_set_aside/3.unreadable/state/_METADATA") == b"state/_METADATA"
    # A second one of the same step gets a suffix, never overwriting the first.
    (workdir_paths.resolve(run) / "checkpoints" / "3" / "commit_success.txt").write_text("again")
    again = checkpoint.set_aside(checkpoint.checkpoint_dir(run), 3, "unreadable")
    assert str(again).endswith("3.unreadable.1")

    # A fresh start over an earlier run's metrics: refused, or (overwrite) the file moved aside.
    with pytest.raises(ResumeConfigError, match=re.escape(f"{run}/metrics.jsonl")):
        resume_check.check_fresh_start(ml_collections.ConfigDict({"overwrite": False}), run)
    resume_check.check_fresh_start(ml_collections.ConfigDict({"overwrite": True}), run)
    (moved,) = gcs.objects("unit/metrics")
    assert re.fullmatch(r"unit/metrics\.replaced-[\d-]+\.jsonl", moved), moved
    _no_local_gs_folder(tmp_path)


def test_model_init_weights_on_gcs(gcs, tmp_path, monkeypatch):
    """config.model_init and gram-convert's output take gs:// too: each layout (orbax folder,
    .msgpack, .npz) written to the bucket and read back unchanged; nothing local."""
    monkeypatch.chdir(tmp_path)
    tree = {"towers": {"text": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}}
    run = f"gs://{gcs.bucket}/weights"
    orbax_dir = params_file.save_params(tree, f"{run}/converted")
    assert str(orbax_dir) == f"{run}/converted/params"
    msgpack = params_file.save_params(tree, f"{run}/w.msgpack")
    assert gcs.objects("weights/w.msgpack") == ["weights/w.msgpack"]
    buffer = io.BytesIO()
    np.savez(buffer, **{"towers/text/kernel": tree["towers"]["text"]["kernel"]})
    (workdir_paths.resolve(f"{run}/w.npz")).write_bytes(buffer.getvalue())
    for path in (f"{run}/converted", str(orbax_dir), str(msgpack), f"{run}/w.npz"):
        loaded = params_file.load_params(path)
        np.testing.assert_array_equal(
            loaded["towers"]["text"]["kernel"], np.arange(6).reshape(2, 3)
        )
    with pytest.raises(FileNotFoundError, match=f"config.model_init: {run}/absent.msgpack"):
        params_file.load_params(f"{run}/absent.msgpack")
    _no_local_gs_folder(tmp_path)


@pytest.mark.media
def test_prepared_dir_on_gcs_reads_as_the_local_copy(gcs, tmp_path, monkeypatch):
    """data.prepared_dir=gs://...: the shards prepared locally, copied to the bucket as the doc
    says, give the local copy's evaluation batches bit for bit; `prepare --out gs://` refuses."""
    monkeypatch.chdir(tmp_path)
    layout = clip_dataset(tmp_path)
    local = tmp_path / "prepared"
    config = small_config(layout, num_frames=3, eval_batch_size=4, prepared_dir=str(local))
    prepare.prepare_split(config, "test", local, records_per_part=3, progress=False)
    gcsfs.GCSFileSystem().put(str(local), f"{gcs.bucket}/prepared", recursive=True)
    remote = f"gs://{gcs.bucket}/prepared"

    def batches(prepared_dir):
        config.prepared_dir = prepared_dir
        return list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))

    expected, got = batches(str(local)), batches(remote)
    assert len(got) == len(expected) == 2
    for a, b in zip(expected, got, strict=True):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with pytest.raises(ValueError, match=r"--out gs://b/p: prepare writes a local folder"):
        prepare.prepare_split(config, "test", "gs://b/p", progress=False)
    _no_local_gs_folder(tmp_path)


def doc_commands() -> list[str]:
    """The gram-train / gram-eval lines of docs/scaling.md's "Workdirs on GCS" block, in order."""
    section = DOC.read_text().split("## Workdirs on GCS", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.startswith(("gram-", "  gram-"))]


def _console_script(name: str) -> str:
    """The installed console script (``pip install -e .``), beside this python or on PATH."""
    beside = pathlib.Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name}: console script not installed (pip install -e .)"
    return found


def _argv(command: str, bucket: str) -> list[str]:
    words = [w.replace("gs://BUCKET/", f"gs://{bucket}/") for w in shlex.split(command)]
    extra = TRAIN_FLAGS if words[0] == "gram-train" else TRAIN_FLAGS[-3:-1]  # the mesh
    return [_console_script(words[0]), *words[1:], *extra]


def _params(directory) -> dict[str, np.ndarray]:
    path = epath.Path(directory) / "state"
    meta = ocp.PyTreeCheckpointer().metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return _leaves(ocp.PyTreeCheckpointer().restore(path, restore_args=args)["params"])


@pytest.mark.slow
def test_gcs_workdir_kill9_resume_and_eval_as_the_doc_says(gcs, tmp_path):
    train, evaluate = doc_commands()
    assert train.startswith("gram-train ") and evaluate.startswith("gram-eval "), (train, evaluate)
    assert "--workdir gs://BUCKET/" in train and "--workdir gs://BUCKET/" in evaluate
    env = jax_cache.subprocess_env(8, ROOT)
    env.update(gcs.env)
    cwd = tmp_path / "cwd"  # where a mistaken local "gs:/..." folder would appear
    cwd.mkdir()
    prefix = re.search(r"--workdir gs://BUCKET/(\S+)", train).group(1).rstrip("/") + "/"

    # The reference: the same command, uninterrupted, into a local folder.
    straight = tmp_path / "straight"
    local = [w if not w.startswith("gs://") else str(straight) for w in _argv(train, gcs.bucket)]
    subprocess.run(local, env=env, cwd=cwd, check=True, timeout=900, capture_output=True)

    # kill -9 once checkpoint 1 is committed in the bucket: the process dies mid-run.
    argv = _argv(train, gcs.bucket)
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=log)
        deadline = time.time() + 900
        marker = f"{prefix}checkpoints/1/commit_success.txt"
        while proc.poll() is None and time.time() < deadline and not gcs.objects(marker):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    steps = {int(n.split("/")[2]) for n in gcs.objects(f"{prefix}checkpoints/")}
    assert steps and max(steps) < STEPS, f"the run finished before it was killed: {steps}"

    done = subprocess.run(argv, env=env, cwd=cwd, timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"starting at step [1-9]\d* from workdir:", done.stderr), done.stderr[-3000:]
    assert f"finished at step {STEPS}: final state gs://{gcs.bucket}/{prefix}" in done.stderr

    resumed = _params(f"gs://{gcs.bucket}/{prefix}checkpoints/{STEPS}")
    reference = _params(straight / "checkpoints" / str(STEPS))
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)

    evaluated = subprocess.run(
        _argv(evaluate, gcs.bucket), env=env, cwd=cwd, timeout=900, capture_output=True, text=True
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    names = set(gcs.objects(prefix))
    for name in ("config.json", "metrics.jsonl", "best/best.json"):
        assert prefix + name in names, sorted(names)
    assert any(n.startswith(f"{prefix}events.out.tfevents.") for n in names), sorted(names)
    assert f"{prefix}checkpoints/{STEPS}/commit_success.txt" in names
    assert any(n.startswith(f"{prefix}best/checkpoints/") for n in names), sorted(names)
    records = [json.loads(line) for line in gcs.read(f"{prefix}metrics.jsonl").splitlines()]
    # The final evaluation of the training run, then gram-eval's (which names its source).
    assert [r["step"] for r in records] == [STEPS, STEPS], records
    assert records[-1]["source"] == f"workdir:{STEPS}"
    _no_local_gs_folder(tmp_path)
    assert not (ROOT / "gs:").exists() and not pathlib.Path(os.getcwd(), "gs:").exists()
