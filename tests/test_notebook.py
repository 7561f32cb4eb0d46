"""notebooks/quickstart.ipynb executes top to bottom (nbclient), shrunk to the runlocal config."""

from __future__ import annotations

import pathlib
import runpy
import shutil

import pytest

from data_pipelines.datasets import tridigits

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
pytestmark = pytest.mark.media


def test_notebook_is_generated_from_its_script():
    nbformat = pytest.importorskip("nbformat")
    cells = runpy.run_path(str(REPO / "notebooks" / "make_quickstart_notebook.py"))["CELLS"]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in nb.cells] == [source for _, source in cells]


def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not (tridigits.default_cache_dir() / "sources" / ".unpacked").exists() and not (
        shutil.which("apt-get") and shutil.which("dpkg-deb")
    ):
        pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")
    monkeypatch.setenv("GRAM_JAX_NOTEBOOK_ARG", "runlocal")
    monkeypatch.setenv("GRAM_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "text->video+audio" in text  # the retrieval table was printed
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the embedding plot is shown
    assert (tmp_path / "workdir" / "embeddings.png").exists()
