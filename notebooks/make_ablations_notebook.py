"""Writes notebooks/ablations.ipynb (run after editing the cells below; the test executes it).

python notebooks/make_ablations_notebook.py
"""

import pathlib

import nbformat

CELLS = [
    (
        "markdown",
        """# GRAM ablations: loss variants side by side on TriDigits (CPU, GPU or TPU)

Trains several objectives on the same towers, data order and schedule, all runs of a method at
once (the trainer's jitted step, `jax.vmap`ped over runs), and compares them on held-out data:
class@1 retrieval for unseen and seen voices and a training sample, the learning curves, and the
diagnostics that show *why* a method fails (positive pairs with a negative cosine: an alignment
made only up to sign; a video tower whose embeddings are all one vector: a collapse).

Methods (`experiments/tridigits/sweep.py`): `cosine_anchor`, `cosine_all_pairs`, `symile`,
`area`, `gram` (GRAM's released recipe) and GRAM with a symmetry breaker: `gram_hybrid`
(+ cosine anchored on text), `gram_hybrid_all` (+ cosine over all pairs), `gram_staged`
(cosine warm-up, then the volume), `gram_matching_late` (matching loss switched on late),
`gram_minilm` (text tower warm-started from real MiniLM weights).

On Colab: `!git clone <this repository> gram_jax && %cd gram_jax/notebooks` first, and pick a
GPU or TPU runtime for the full settings (`STEPS = 1500`, 5 seeds, 4 folds).""",
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
# GRAM_JAX_NOTEBOOK_ARG=runlocal shrinks everything (the test: small data, 2 steps, 1 run each).
SMALL = os.environ.get("GRAM_JAX_NOTEBOOK_ARG", "") == "runlocal"
WORKDIR = pathlib.Path(
    os.environ.get("GRAM_JAX_NOTEBOOK_WORKDIR", REPO / "workdirs" / "ablations")
)
import jax
print(REPO, "small:", SMALL, WORKDIR, jax.devices())""",
    ),
    ("markdown", "## 1. Choose the methods and the budget"),
    (
        "code",
        """METHODS = ["cosine_anchor", "gram", "gram_hybrid"]
STEPS, SEEDS, FOLDS, BATCH = 300, "0,1", "0", 32
if SMALL:
    METHODS, STEPS, SEEDS, FOLDS, BATCH = ["cosine_anchor", "gram_hybrid"], 2, "0", "1", 8
argv = ["--workdir", str(WORKDIR), "--methods", ",".join(METHODS), "--steps", str(STEPS)]
argv += ["--seeds", SEEDS, "--folds", FOLDS, "--batch-size", str(BATCH), "--frames", "2"]
argv += ["--results", str(WORKDIR / "results.md")] + (["--small"] if SMALL else [])
argv""",
    ),
    ("markdown", "## 2. Train every method (builds TriDigits the first time, about a minute)"),
    (
        "code",
        """from experiments.tridigits import sweep

sweep.main(argv)""",
    ),
    ("markdown", "## 3. Tables: class@1 per split and the sign / collapse diagnostics"),
    (
        "code",
        """from IPython.display import Image, Markdown, display

text = (WORKDIR / "results.md").read_text()
table = text.split("<!-- tridigits-table:start -->")[1].split("<!-- tridigits-table:end")[0]
display(Markdown(table))""",
    ),
    ("markdown", "## 4. Learning curves and positive-pair cosines"),
    (
        "code",
        """for name in ("tridigits_curves.png", "tridigits_positive_cos.png"):
    display(Image(filename=str(WORKDIR / "figures" / name)))""",
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
    path = pathlib.Path(__file__).with_name("ablations.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
