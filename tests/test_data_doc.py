"""The commands of docs/data.md's "Audio in the released layout" and "Protocols" run as written.

Read from the doc's ```bash blocks of those sections, each runs in a fresh process through its
console script's entry point, on a data root laid out as the paper configs expect
(``$GRAM_DATA/msrvtt/{videos,audios,annotations}``): the 4 real reference clips named by the
first 4 real MSR-VTT test ids (the third replaced by a real H.264 video without audio), the real
test records of those ids, and the first 40 real rows of the MSR-VTT training annotations. The
doc's ``~/gram_data`` (the default data root) is the placeholder filled with that root.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from media_fixtures import write_index_video
from test_readme_howtos import console_scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("## Audio in the released layout", "## Protocols")
TRAIN_ROWS = 40
pytestmark = pytest.mark.media


def doc_commands() -> list[str]:
    """The commands of the ```bash blocks of SECTIONS, in doc order."""
    text = (ROOT / "docs" / "data.md").read_text()
    commands = []
    for title in SECTIONS:
        section = text.split(title, 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
            commands += [line for line in _joined(block).splitlines() if line.strip()]
    return commands


def _joined(text: str) -> str:
    """``text`` with shell line continuations (a backslash, newline and indent) joined."""
    return re.sub(r" *\\\n\s*", " ", text)


@pytest.fixture
def data_root(reference_data, tmp_path):
    root = tmp_path / "gram_data"
    msrvtt = root / "msrvtt"
    (msrvtt / "videos").mkdir(parents=True)
    (msrvtt / "annotations").mkdir()
    source = reference_data / "annotations" / "msrvtt"
    test = json.loads((source / "descs_ret_test.json").read_text())[:4]
    for i, record in enumerate(test, start=1):
        target = msrvtt / "videos" / f"{record['video_id']}.mp4"
        if i == 3:
            write_index_video(target, 12)
        else:
            shutil.copy(reference_data / "media" / "videos" / f"video{i}.mp4", target)
    (msrvtt / "annotations" / "descs_ret_test.json").write_text(json.dumps(test))
    train = json.loads((source / "unique_descs_ret_train.json").read_text())[:TRAIN_ROWS]
    (msrvtt / "annotations" / "descs_ret_train.json").write_text(json.dumps(train))
    return root, [r["video_id"] for r in test]


def _run(command: str, root: pathlib.Path) -> subprocess.CompletedProcess:
    words = [w.replace("~/gram_data", str(root)) for w in shlex.split(command)]
    module, function = console_scripts()[words[0]].split(":")
    code = f"import sys; sys.argv[0] = {words[0]!r}; from {module} import {function}; {function}()"
    env = {"GRAM_DATA": str(root), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *words[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_doc_commands_run_as_written(data_root):
    root, ids = data_root
    commands = doc_commands()
    assert [c.split()[:2] for c in commands] == [
        ["gram-data", "extract-audio"],
        ["gram-train", "--config"],
    ]
    # experiments/paper/paper_base.py quotes the same commands.
    paper_doc = _joined((ROOT / "experiments" / "paper" / "paper_base.py").read_text())
    assert all(c in paper_doc for c in commands)
    for command in commands:
        proc = _run(command, root)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if command.startswith("gram-train"):
            config = json.loads(proc.stdout)
            assert config["protocol"] == "standard_1ka"
            assert (config["data"]["filter_audio"], config["data"]["bad_data"]) == (False, "skip")
            assert config["evals"]["msrvtt"]["require"] == []
            # Counted from the training file: int(40 // 32 * 4), the released formula.
            assert config["total_steps"] == int(TRAIN_ROWS // 32 * 4) == 4
            assert config["model"]["modalities"] == ["text", "video", "audio"]
        else:
            audios = root / "msrvtt" / "audios"
            assert proc.stdout.strip() == (
                f"extract-audio: 4 videos -> {audios}: 3 written, 0 already there, 1 without an "
                f"audio stream (no file), 0 failed; no audio: {ids[2]}"
            )
            assert sorted(p.stem for p in audios.iterdir()) == sorted(ids[:2] + ids[3:])
