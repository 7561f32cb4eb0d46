"""Folders published whole (data_pipelines.atomic_dir): stale leftovers, concurrent processes."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from data_pipelines.atomic_dir import publish_dir, staging_dir

REPO = pathlib.Path(__file__).resolve().parents[1]

# One publisher process: `rounds` times, stage a folder of 20 files that all carry the same token,
# then publish it over whatever is there (the other publishers race it all along).
PUBLISHER = """
import pathlib, sys
from data_pipelines.atomic_dir import publish_dir, staging_dir
final, name, rounds = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    staged = staging_dir(final)
    for i in range(20):
        (staged / f"part{i}").write_text(f"{name}-{r}")
    publish_dir(staged, final)
"""


def _fill(path: pathlib.Path, token: str, n: int = 3) -> None:
    for i in range(n):
        (path / f"part{i}").write_text(token)


def test_a_stale_partial_folder_is_replaced_and_nothing_is_left_beside_it(tmp_path):
    final = tmp_path / "dataset"
    (final / "videos").mkdir(parents=True)
    (final / "videos" / "half.mp4").write_bytes(b"\0" * 10)  # a killed in-place writer's leftover
    staged = staging_dir(final)
    assert staged.parent == tmp_path and staged.name.startswith(".dataset.")
    _fill(staged, "new")
    assert publish_dir(staged, final)
    assert sorted(p.name for p in final.iterdir()) == ["part0", "part1", "part2"]
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


def test_a_complete_folder_of_a_concurrent_builder_is_kept(tmp_path):
    final = tmp_path / "dataset"
    final.mkdir()
    _fill(final, "theirs")
    (final / "DONE").write_text("")
    staged = staging_dir(final)
    _fill(staged, "ours")
    assert not publish_dir(staged, final, is_complete=lambda p: (p / "DONE").exists())
    assert (final / "part0").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


def test_concurrent_publisher_processes(tmp_path):
    final = tmp_path / "dataset"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(final), f"p{k}", "15"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    tokens = {p.read_text() for p in final.iterdir()}
    assert len(list(final.iterdir())) == 20 and len(tokens) == 1  # one publisher's whole folder
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]  # no staging or old folder left
