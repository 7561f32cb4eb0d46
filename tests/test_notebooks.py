"""The Colab notebooks (notebooks/build.py writes them): committed cells, stored outputs, install
cell, and each notebook executed top to bottom at tiny sizes, in this environment and (slow) in a
fresh virtual environment holding only what the notebook's first cell installs."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str):
    """notebooks/<name>.py under a unique module name (pip's `build` package shares the name)."""
    spec = importlib.util.spec_from_file_location(
        f"notebooks_{name}", REPO / "notebooks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load("build")
cells = build.cell_specs
install_cell = _load("install_cell")

nbformat = pytest.importorskip("nbformat")
NAMES = sorted(cells.NOTEBOOKS)


def _committed(name):
    return nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)


def _shape(nb):
    """(cell type, source, tags) of every cell: what the builder decides, outputs aside."""
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def _outputs(nb):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        parts.append(o.get("text", ""))
        parts += [o.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")]
    return "\n".join(parts)


def _assert_shows(nb, name):
    """No errors; every code cell ran; each 'shows-table' cell printed text or Markdown and each
    'shows-plot' cell displayed a PNG; plus what each notebook must print."""
    assert not [o for o in _outputs(nb) if o.output_type == "error"], name
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, (name, cell.source[:60])
        tags = cell.metadata.get("tags", [])
        if "shows-plot" in tags:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
        if "shows-table" in tags:
            shown = [
                o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in cell.outputs
            ]
            assert any("|" in s or "\n" in s.strip() for s in shown), cell.source
    text = _text(nb)
    if name == "quickstart":
        assert "text->video+audio" in text and "class@1" in text
    elif name == "inference":
        rows = text.split("Volume:\n", 1)[1].splitlines()[:4]
        values = [float(v) for r in rows for v in r.replace("[", " ").replace("]", " ").split()]
        assert len(values) == 16 and all(0.0 <= v <= 1.0 for v in values)
        assert text.count("query: A dog is barking") == 3
    elif name == "ablations":
        assert "| cosine_anchor | 1 |" in text and "| gram_hybrid | 1 |" in text
        for variant in ("| tv | text, video |", "| tva |", "| tvas |"):
            assert variant in text
        assert "| positive_volume |" in text  # the modality table's volume column


@pytest.mark.parametrize("name", NAMES)
def test_committed_cells_are_the_builders(name):
    """Edit notebooks/cells.py or install_cell.py, then run `python notebooks/build.py`."""
    assert _shape(_committed(name)) == _shape(build.notebook(name))


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_carries_its_outputs(name):
    _assert_shows(_committed(name), name)


def test_install_cell_installs_setup_py_url():
    """The URL baked into every notebook is setup.py's `url=`, as setuptools reads it."""
    url = subprocess.run(
        [sys.executable, "setup.py", "--url"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert url.startswith("https://")
    for name in NAMES:
        first = _committed(name).cells[0].source
        consts = {
            n.targets[0].id: ast.literal_eval(n.value)
            for n in ast.parse(first).body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
        }
        assert consts["REPO_URL"] == url


def test_install_cell_choices(tmp_path, monkeypatch):
    monkeypatch.setattr(install_cell, "REPO_URL", "https://example.org/gram_jax")
    # Inside a clone: its root, found from the notebooks folder; outside (Colab's /content): None.
    assert install_cell.local_checkout(REPO / "notebooks") == REPO
    assert install_cell.local_checkout(tmp_path) is None
    assert install_cell.requirements(None, None) == ["gram_jax @ git+https://example.org/gram_jax"]
    assert install_cell.requirements(REPO, "cuda12") == [f"{REPO}[cuda12]"]  # setup.py's extras
    assert install_cell.requirements(None, "tpu") == [
        "gram_jax[tpu] @ git+https://example.org/gram_jax"
    ]
    # A TPU runtime is seen from its environment or its /dev/accel* devices.
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on PATH
    none = str(tmp_path / "accel*")
    assert install_cell.accelerator({}, none) is None
    assert install_cell.accelerator({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, none) == "tpu"
    assert install_cell.accelerator({"TPU_ACCELERATOR_TYPE": "v5e-1"}, none) == "tpu"
    (tmp_path / "accel0").touch()
    assert install_cell.accelerator({}, none) == "tpu"


def _skip_without_tridigits_tools(name):
    from data_pipelines.datasets import tridigits

    unpacked = (tridigits.default_cache_dir() / "sources" / ".unpacked").exists()
    if name != "inference" and not unpacked:
        import shutil

        if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
            pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")


def _one_device_kernel(monkeypatch):
    """The kernel gets the machine's own devices (one CPU, as a Colab CPU runtime), not the 8
    that conftest forces for this process: the ablations notebook's tiny modality run trains on
    the 4 reference clips, one global batch that 8 devices cannot split."""
    forced = r"--xla_force_host_platform_device_count=\d+"
    flags = re.sub(forced, "", os.environ.get("XLA_FLAGS", ""))
    monkeypatch.setenv("XLA_FLAGS", flags.strip())


@pytest.mark.slow
@pytest.mark.media
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_here(name, tmp_path, monkeypatch):
    """Top to bottom in this environment (the install cell finds gram_jax and installs nothing)."""
    _skip_without_tridigits_tools(name)
    _one_device_kernel(monkeypatch)
    nb = build.notebook(name)
    start = time.time()
    build.execute(nb, REPO / "notebooks", build.tiny_env(tmp_path / "workdir"))
    print(f"{name}: executed in {time.time() - start:.0f} s")
    _assert_shows(nb, name)
    assert "nothing installed" in "".join(o.get("text", "") for o in nb.cells[0].outputs)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory):
    """A virtual environment with only ipykernel (what Colab's kernel has), as a Jupyter kernel."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "ipykernel"], check=True)
    spec = root / "share" / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    return root, python


@pytest.mark.slow
@pytest.mark.media
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_in_a_fresh_venv(name, fresh_venv, tmp_path, monkeypatch):
    """The first cell installs the local checkout (non-editable) into a venv that lacks gram_jax,
    and the same kernel then imports it and runs every cell."""
    _skip_without_tridigits_tools(name)
    root, python = fresh_venv
    monkeypatch.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel must not see this checkout
    _one_device_kernel(monkeypatch)
    nb = build.notebook(name)
    start = time.time()
    build.execute(nb, REPO / "notebooks", build.tiny_env(tmp_path / "workdir"), "fresh")
    print(f"{name}: executed in a fresh venv in {time.time() - start:.0f} s")
    _assert_shows(nb, name)
    first = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert f"pip install {REPO}" in first or "nothing installed" in first
    site = subprocess.run(
        [str(python), "-c", "import gram_jax; print(gram_jax.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the checkout, which `python -c` would put first on sys.path
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout
    assert "site-packages" in site  # a regular install, not the checkout on sys.path
