"""Writes the notebooks (quickstart, inference, ablations) and runs them to store their outputs.

    python notebooks/build.py                      # all three, executed at tiny sizes
    python notebooks/build.py --only quickstart    # one of them
    python notebooks/build.py --no-execute         # cells only (the test then fails: no outputs)

Every notebook starts with the same install cell (notebooks/install_cell.py, with setup.py's
repository URL written in); its own cells come from notebooks/cells.py.
The committed notebooks carry the outputs of a run with ``GRAM_JAX_NOTEBOOK_ARG=runlocal``, so a
reader sees the tables and plots without running anything.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # cells.py beside this file, however the builder is started

import cells as cell_specs  # noqa: E402

# The keys of the kernel-spec metadata every notebook gets (Colab and Jupyter read them).
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def setup_url(setup_py: pathlib.Path = REPO / "setup.py") -> str:
    """setup.py's ``URL``, read without running it (a notebook cannot import it before the
    install); also checks that its extras name the accelerators the install cell may pick."""
    tree = ast.parse(setup_py.read_text())
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id == "URL":
                values["URL"] = ast.literal_eval(node.value)
            elif isinstance(target, ast.Name) and target.id == "EXTRAS":
                # The extras' names only (their lists may splice shared lists: `*GCS`).
                values["EXTRAS"] = [ast.literal_eval(key) for key in node.value.keys]
    missing = {"URL", "EXTRAS"} - set(values)
    if missing:
        raise ValueError(f"{setup_py}: expected top-level assignments of {sorted(missing)}")
    absent = {"cuda12", "tpu"} - set(values["EXTRAS"])
    if absent:
        raise ValueError(f"{setup_py}: EXTRAS lacks {sorted(absent)} (the install cell's extras)")
    return values["URL"]


def install_source(url: str) -> str:
    """The install cell: notebooks/install_cell.py with the repository URL filled in."""
    text = (HERE / "install_cell.py").read_text()
    text, count = re.subn(r'^REPO_URL = ""$', f"REPO_URL = {json.dumps(url)}", text, flags=re.M)
    if count != 1:
        raise ValueError("notebooks/install_cell.py: expected one line 'REPO_URL = \"\"'")
    return text.rstrip("\n")


def notebook(name: str):
    """The unexecuted notebook ``name`` (a key of cells.NOTEBOOKS) as an nbformat node."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    specs = [cell_specs.Cell("code", install_source(setup_url()))]
    for spec in specs + cell_specs.NOTEBOOKS[name]():
        if spec.kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(spec.source)
        else:
            cell = nbformat.v4.new_code_cell(spec.source)
            if spec.shows:
                cell.metadata["tags"] = [f"shows-{kind}" for kind in spec.shows]
        nb.cells.append(cell)
    return nb


def execute(nb, cwd: pathlib.Path, env: dict[str, str] | None = None, kernel_name="python3"):
    """Runs ``nb`` in place (nbclient) with ``cwd`` as the kernel's folder; raises on an error.

    ``env`` entries are set for the kernel (``GRAM_JAX_NOTEBOOK_ARG`` etc.) and restored after.
    """
    import nbclient

    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=1800,
            kernel_name=kernel_name,
            record_timing=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def drop_compile_alarms(nb):
    """Removes XLA's "Very slow compile?" stderr alarms (a busy machine's timing, not output)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.outputs
                if not (o.output_type == "stream" and "slow_operation_alarm" in o.get("text", ""))
            ]
    return nb


def tiny_env(workdir: pathlib.Path) -> dict[str, str]:
    """The environment of the tiny runs (the tests and the stored outputs)."""
    return {"GRAM_JAX_NOTEBOOK_ARG": "runlocal", "GRAM_JAX_NOTEBOOK_WORKDIR": str(workdir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(cell_specs.NOTEBOOKS), action="append")
    parser.add_argument("--no-execute", action="store_true", help="write the cells only")
    args = parser.parse_args(argv)
    import nbformat

    for name in args.only or list(cell_specs.NOTEBOOKS):
        nb = notebook(name)
        if not args.no_execute:
            with tempfile.TemporaryDirectory(prefix=f"notebook_{name}_") as tmp:
                # The workdir is relative to the kernel's folder so no machine path is stored.
                execute(nb, pathlib.Path(tmp), tiny_env(pathlib.Path("workdirs") / name))
            drop_compile_alarms(nb)
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
