"""``--print_config``: the prepared config of a paper row, as a user inspects it (no workdir, no
data on the machine), and a refused key as one line with exit code 2."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_gram_train_prints_the_prepared_paper_row():
    done = _run(
        "gram_jax.cli.train",
        "--config",
        "experiments/paper/finetune_tva.py:msrvtt",
        "--print_config",
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    # What preparation made of the row: T-VA trains text, video and audio (no subtitle), and the
    # fusion frame table is sized to the row's frames.
    assert config["model"]["modalities"] == ["text", "video", "audio"]
    assert config["model"]["vision"]["max_frames"] == config["data"]["num_frames"]


def test_gram_eval_prints_and_refuses_in_one_line():
    done = _run(
        "gram_jax.cli.eval",
        "--config",
        "experiments/paper/finetune_tvas.py:msrvtt",
        "--print_config",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["modalities"] == ["text", "video", "audio", "subtitle"]
    refused = _run(
        "gram_jax.cli.eval",
        "--config",
        "experiments/paper/finetune_tvas.py:msrvtt",
        "--config.optim.lr=-1.0",
        "--print_config",
    )
    assert refused.returncode == 2
    assert "config.optim.lr" in refused.stderr and "Traceback" not in refused.stderr
