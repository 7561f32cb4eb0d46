"""notebooks/inference.ipynb executes top to bottom (nbclient) with its tiny random-init GRAM."""

from __future__ import annotations

import pathlib
import runpy

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "inference.ipynb"
pytestmark = pytest.mark.media


def test_notebook_is_generated_from_its_script():
    nbformat = pytest.importorskip("nbformat")
    cells = runpy.run_path(str(REPO / "notebooks" / "make_inference_notebook.py"))["CELLS"]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in nb.cells] == [source for _, source in cells]


def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GRAM_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    monkeypatch.delenv("GRAM_JAX_CHECKPOINT", raising=False)
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
    assert "weights: " in text and "random_init.msgpack" in text
    # The 4 x 4 volume matrix: 4 rows of 4 numbers in [0, 1] after "Volume:".
    rows = text.split("Volume:\n", 1)[1].splitlines()[:4]
    values = [float(v) for row in rows for v in row.replace("[", " ").replace("]", " ").split()]
    assert len(values) == 16 and all(0.0 <= v <= 1.0 for v in values)
    for scoring in ("volume", "cosine", "matching"):
        assert f"== {scoring}" in text
    assert text.count("query: A dog is barking") == 3
    assert (tmp_path / "workdir" / "random_init.msgpack").stat().st_size > 0
