"""Writes notebooks/quickstart.ipynb (run after editing the cells below; the test executes it).

python notebooks/make_quickstart_notebook.py
"""

import pathlib

import nbformat

CELLS = [
    (
        "markdown",
        """# GRAM in JAX: quickstart on real data (CPU or Colab)

This notebook installs `gram_jax`, builds **TriDigits** (real handwritten digits with synthetic
motion, real human speech of the number words in 22 languages, and the written word; built offline
from Debian packages), trains a small GRAM model from scratch on CPU (volume contrastive loss plus
a cosine term over every modality pair: the symmetry breaker that keeps every tower learning, see
docs/results.md; learnable temperature, warm-up), and shows the retrieval table, the sign and
collapse diagnostics, and a 2-D plot of the embeddings. For loss variants side by side, see
`ablations.ipynb`.

On Colab: `!git clone <this repository> gram_jax && %cd gram_jax/notebooks` first. The build needs
`apt-get` (Colab has it); everything else comes from PyPI.""",
    ),
    (
        "code",
        """import os, pathlib, subprocess, sys

REPO = pathlib.Path.cwd().resolve()
if not (REPO / "setup.py").exists():
    REPO = REPO.parent
try:
    import gram_jax  # noqa: F401  (already installed, e.g. `pip install -e .`)
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
# GRAM_JAX_NOTEBOOK_ARG shrinks the run (the test sets 'runlocal': small data, 2 steps).
ARG = os.environ.get("GRAM_JAX_NOTEBOOK_ARG", "")
WORKDIR = pathlib.Path(os.environ.get("GRAM_JAX_NOTEBOOK_WORKDIR", REPO / "workdirs" / "notebook"))
print(REPO, repr(ARG), WORKDIR)""",
    ),
    ("markdown", "## 1. Build TriDigits (about a minute the first time; cached afterwards)"),
    (
        "code",
        """from gram_jax.config.loading import load_config_module

quickstart = load_config_module(REPO / "experiments" / "quickstart.py")
config = quickstart.get_config(ARG or None)  # builds the dataset when absent
root = pathlib.Path(config.data.video_dir).parent
import json
records = json.loads(pathlib.Path(config.data.annotations.test).read_text())
print(root, "| test records of fold 0:", len(records))
records[:3]""",
    ),
    ("markdown", "## 2. Train (tiny towers, CPU)"),
    (
        "code",
        """from gram_jax.train import Trainer, train_and_evaluate

state = train_and_evaluate(config, WORKDIR)
for line in (WORKDIR / "metrics.jsonl").read_text().splitlines()[-1:]:
    metrics = json.loads(line)
    print({k: round(v, 3) for k, v in metrics.items() if k.startswith("t2d") or k == "step"})""",
    ),
    ("markdown", "## 3. Retrieval table and embedding plot (held-out voices)"),
    (
        "code",
        """from IPython.display import Image, display
from gram_jax.evaluators.report import report_run

report = report_run(config, Trainer(config), state, WORKDIR)
display(Image(filename=report["plot"]))""",
    ),
]


def main() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    path = pathlib.Path(__file__).with_name("quickstart.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
