"""Writes notebooks/inference.ipynb (run after editing the cells below; the test executes it).

python notebooks/make_inference_notebook.py
"""

import pathlib

import nbformat

CELLS = [
    (
        "markdown",
        """# GRAM in JAX: rank your own clips against captions

What the released GRAM `inference.ipynb` does, with `gram_jax.inference`: embed 4 captions and
4 video+audio clips (the upstream notebook's, committed in `data_pipelines/reference_data/media`),
print the 4 x 4 volume matrix (smaller volume = better aligned), and rank the clips per caption by
volume, cosine and matching re-rank.

**About the weights.** No released GRAM weights are available offline, so by default this notebook
uses a *tiny GRAM with random weights*: it saves them as a weights file and loads that file back,
the same path converted release weights take. Its numbers are therefore meaningless; the notebook
shows the path, not GRAM's quality. To use real weights, set `GRAM_JAX_CHECKPOINT` to a `gram-train`
workdir (its saved config is used), or to a `gram-convert` weights file together with
`GRAM_JAX_CONFIG` (the experiment config it belongs to, e.g.
`experiments/paper/zeroshot_tva.py`).""",
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
CHECKPOINT = os.environ.get("GRAM_JAX_CHECKPOINT", "")
CONFIG = os.environ.get("GRAM_JAX_CONFIG", "")
WORKDIR = pathlib.Path(os.environ.get("GRAM_JAX_NOTEBOOK_WORKDIR", REPO / "workdirs" / "inference"))
WORKDIR.mkdir(parents=True, exist_ok=True)
print(REPO, repr(CHECKPOINT), WORKDIR)""",
    ),
    ("markdown", "## 1. Load a checkpoint"),
    (
        "code",
        """from gram_jax.inference import GramInference

if CHECKPOINT:
    config = None
    if CONFIG:
        from gram_jax.config.loading import load_config

        config = load_config(CONFIG)
    gram = GramInference.load(CHECKPOINT, config)
else:
    from experiments import base_config

    config = base_config.get_config("runlocal")  # tiny towers, small frames and audio slices
    weights = GramInference.initialize(config).save_params(WORKDIR / "random_init.msgpack")
    gram = GramInference.load(weights, config)  # a weights file, as gram-convert writes one
print("weights:", gram.source, "| data modalities:", gram.data_modalities)""",
    ),
    ("markdown", "## 2. Embed the captions and the clips"),
    (
        "code",
        """MEDIA = REPO / "data_pipelines" / "reference_data" / "media"
captions = [
    "A dog is barking",
    "A dog is howling",
    "A red cat is meowing",
    "A black cat is meowing",
]
videos = [MEDIA / "videos" / f"video{i}.mp4" for i in range(1, 5)]
audios = [MEDIA / "audios" / f"audio{i}.mp3" for i in range(1, 5)]

texts = gram.embed_texts(captions)
media = gram.embed_media(videos=videos, audios=audios)
print({m: e.shape for m, e in media.embeddings.items()}, "text:", texts.embeddings.shape)""",
    ),
    ("markdown", "## 3. The volume matrix (rows: captions, columns: clips; smaller = better)"),
    (
        "code",
        """import numpy as np

volume = -gram.score(texts, media, "volume")
np.set_printoptions(precision=4, suppress=True)
print("Volume:")
print(volume)
print("clip with the smallest volume per caption:", [media.names[j] for j in volume.argmin(1)])""",
    ),
    ("markdown", "## 4. Rankings per caption: volume, cosine, matching re-rank"),
    (
        "code",
        """from gram_jax.cli.rank import format_ranking

for scoring in ("volume", "cosine", "matching"):
    print(f"== {scoring}")
    print(format_ranking(captions, media.names, gram.score(texts, media, scoring, top_k=2)))""",
    ),
    (
        "markdown",
        """The same from a shell, for a folder of clips (audio from `<stem>.mp3` beside each
video, else the video's own track):

```
gram-rank --checkpoint WORKDIR_OR_WEIGHTS [--config CONFIG] --media-dir my_clips \\
    --queries "A dog is barking" "A red cat is meowing" --scoring volume
```""",
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
    path = pathlib.Path(__file__).with_name("inference.ipynb")
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
