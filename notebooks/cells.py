"""The cells of each notebook after the shared install cell (notebooks/build.py writes them).

A notebook is a list of `Cell`s; `shows` names what a code cell displays ('table', 'plot'), so
the test can check that every committed notebook carries those outputs. Each notebook reads two
environment variables: ``GRAM_JAX_NOTEBOOK_ARG=runlocal`` shrinks every run (the tests and the
stored outputs), ``GRAM_JAX_NOTEBOOK_WORKDIR`` moves its output folder (default ``workdirs/<name>``
under the notebook's folder; ``/content/workdirs/<name>`` on Colab).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Cell:
    """One notebook cell: kind 'markdown' or 'code'; ``shows``: output kinds it must display."""

    kind: str
    source: str
    shows: tuple[str, ...] = ()


def md(source: str) -> Cell:
    return Cell("markdown", source)


def code(source: str, *shows: str) -> Cell:
    return Cell("code", source, shows)


COLAB = """**On Colab** run the cells top to bottom: the first one installs `gram_jax` from the
repository (and, on a GPU or TPU runtime, the matching JAX) into the running kernel, no restart
needed."""


def _setup(name: str, imports: str = "import json\n\n") -> str:
    # os and pathlib come from the install cell, which every notebook runs first.
    return f"""{imports}import jax

# GRAM_JAX_NOTEBOOK_ARG=runlocal shrinks everything (the tests and the stored outputs use it).
ARG = os.environ.get("GRAM_JAX_NOTEBOOK_ARG", "")
SMALL = ARG == "runlocal"
WORKDIR = pathlib.Path(os.environ.get("GRAM_JAX_NOTEBOOK_WORKDIR", "workdirs/{name}"))
WORKDIR.mkdir(parents=True, exist_ok=True)
print("jax", jax.__version__, jax.devices(), "| small:", SMALL)"""


def quickstart() -> list[Cell]:
    return [
        md(
            """# GRAM in JAX: quickstart on real data (CPU, GPU or TPU)

This notebook installs `gram_jax`, builds **TriDigits** (real handwritten digits with synthetic
motion, real human speech of the number words in 22 languages, and the written word; built from
Debian/Ubuntu packages with `apt-get`), trains a small GRAM model from scratch (volume contrastive
loss plus a cosine term over every modality pair: the symmetry breaker that keeps every tower
learning, see docs/results.md; learnable temperature, warm-up), and shows the retrieval table,
the sign and collapse diagnostics, and a 2-D plot of the embeddings. For loss variants side by
side, see `ablations.ipynb`.

"""
            + COLAB
            + """ The stored outputs come from the tiny run
(`GRAM_JAX_NOTEBOOK_ARG=runlocal`: the small TriDigits, 2 steps), so their numbers are chance."""
        ),
        code(_setup("quickstart")),
        md("## 1. Build TriDigits (about a minute the first time; cached afterwards)"),
        code(
            """from experiments import quickstart

config = quickstart.get_config(ARG or None)  # builds the dataset when absent
records = json.loads(pathlib.Path(config.data.annotations.test).read_text())
print("test records of fold 0:", len(records))
records[:3]"""
        ),
        md("## 2. Train (tiny towers)"),
        code(
            """from gram_jax.train import train_and_evaluate

state = train_and_evaluate(config, WORKDIR)
last = json.loads((WORKDIR / "metrics.jsonl").read_text().splitlines()[-1])
print({k: round(v, 3) for k, v in last.items() if k.startswith("t2d") or k == "step"})"""
        ),
        md("## 3. Retrieval table and diagnostics (held-out images, unseen voices)"),
        code(
            """from gram_jax.evaluators.report import format_diagnostics, format_table

report = json.loads((WORKDIR / "report.json").read_text())
print(format_table(report["retrieval"], report["collapse"], f"scored by {report['scoring']}"))
print(format_diagnostics(report["diagnostics"]))""",
            "table",
        ),
        md("## 4. The embeddings in 2-D"),
        code(
            """from IPython.display import Image, display

display(Image(filename=str(WORKDIR / "embeddings.png")))""",
            "plot",
        ),
    ]


def inference() -> list[Cell]:
    return [
        md(
            """# GRAM in JAX: rank your own clips against captions

What the released GRAM `inference.ipynb` does, with `gram_jax.inference`: embed 4 captions and
4 video+audio clips (the upstream notebook's, shipped in `data_pipelines/reference_data/media`),
print the 4 x 4 volume matrix (smaller volume = better aligned), and rank the clips per caption by
volume, cosine and matching re-rank.

**About the weights.** No released GRAM weights are available offline, so by default this notebook
uses a *tiny GRAM with random weights*: it saves them as a weights file and loads that file back,
the same path converted release weights take. Its numbers are therefore meaningless; the notebook
shows the path, not GRAM's quality. To use real weights, set `GRAM_JAX_CHECKPOINT` to a `gram-train`
workdir (its saved config is used), or to a `gram-convert` weights file together with
`GRAM_JAX_CONFIG` (the experiment config it belongs to, e.g.
`experiments/paper/zeroshot_tva.py`).

"""
            + COLAB
        ),
        code(
            _setup("inference", imports="")
            + """
CHECKPOINT = os.environ.get("GRAM_JAX_CHECKPOINT", "")
CONFIG = os.environ.get("GRAM_JAX_CONFIG", "")"""
        ),
        md("## 1. Load a checkpoint"),
        code(
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
print("weights:", pathlib.Path(gram.source).name, "| data modalities:", gram.data_modalities)"""
        ),
        md("## 2. Embed the captions and the clips"),
        code(
            """import data_pipelines

MEDIA = pathlib.Path(data_pipelines.__file__).parent / "reference_data" / "media"
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
print({m: e.shape for m, e in media.embeddings.items()}, "text:", texts.embeddings.shape)"""
        ),
        md("## 3. The volume matrix (rows: captions, columns: clips; smaller = better)"),
        code(
            """import numpy as np

volume = -gram.score(texts, media, "volume")
np.set_printoptions(precision=4, suppress=True)
print("Volume:")
print(volume)
print("clip with the smallest volume per caption:", [media.names[j] for j in volume.argmin(1)])""",
            "table",
        ),
        md("## 4. Rankings per caption: volume, cosine, matching re-rank"),
        code(
            """from gram_jax.inference.rank import format_ranking

for scoring in ("volume", "cosine", "matching"):
    print(f"== {scoring}")
    print(format_ranking(captions, media.names, gram.score(texts, media, scoring, top_k=2)))""",
            "table",
        ),
        md(
            """The same from a shell, for a folder of clips (audio from `<stem>.mp3` beside each
video, else the video's own track):

```
gram-rank --checkpoint WORKDIR_OR_WEIGHTS [--config CONFIG] --media_dir my_clips \\
    --queries "A dog is barking" --queries "A red cat is meowing" --scoring volume
```"""
        ),
    ]


def ablations() -> list[Cell]:
    return [
        md(
            """# GRAM ablations: loss variants and the number of modalities (CPU, GPU or TPU)

**Loss variants on TriDigits.** Trains several objectives on the same towers, data order and
schedule, all runs of a method at once (the trainer's jitted step, `jax.vmap`ped over runs), and
compares them on held-out data: class@1 retrieval for unseen and seen voices and a training sample,
the learning curves, and the diagnostics that show *why* a method fails (positive pairs with a
negative cosine: an alignment made only up to sign; a video tower whose embeddings are all one
vector: a collapse). Methods (`experiments/tridigits/sweep.py`): `cosine_anchor`,
`cosine_all_pairs`, `symile`, `area`, `gram` (GRAM's released recipe) and GRAM with a symmetry
breaker: `gram_hybrid` (+ cosine anchored on text), `gram_hybrid_all` (+ cosine over all pairs),
`gram_staged` (cosine warm-up, then the volume), `gram_matching_late` (matching loss switched on
late), `gram_minilm` (text tower warm-started from real MiniLM weights).

**Number of modalities in the volume** (`experiments/ablations/modalities.py`, the paper's
Table 2 rows): T-V, T-VA and T-VAS fine-tuned on MSR-VTT.

"""
            + COLAB
            + """ Pick a GPU or TPU runtime for the full settings (`STEPS = 1500`, 5 seeds,
4 folds). The stored outputs come from the tiny run (`GRAM_JAX_NOTEBOOK_ARG=runlocal`), so their
numbers are chance."""
        ),
        code(_setup("ablations")),
        md("## 1. Choose the methods and the budget"),
        code(
            """METHODS = ["cosine_anchor", "gram", "gram_hybrid"]
STEPS, SEEDS, FOLDS, BATCH = 300, "0,1", "0", 32
if SMALL:
    METHODS, STEPS, SEEDS, FOLDS, BATCH = ["cosine_anchor", "gram_hybrid"], 8, "0", "1", 8
argv = ["--workdir", str(WORKDIR), "--methods", ",".join(METHODS), "--steps", str(STEPS)]
argv += ["--seeds", SEEDS, "--folds", FOLDS, "--batch-size", str(BATCH), "--frames", "2"]
argv += ["--results", str(WORKDIR / "results.md")] + (["--small"] if SMALL else [])
argv"""
        ),
        md(
            """**Tiny, not a result.** With `GRAM_JAX_NOTEBOOK_ARG=runlocal` (the stored outputs)
each method trains one run (seed 0, fold 1) for 8 steps of batch 8 on the small TriDigits
(evaluated every 2 steps: 4 points per curve), and each modality variant below 4 steps on the 4
reference clips: the smallest run that still fills every table row and draws every curve. Its
class@1 and R@1 are chance; they show what the notebook reports, not how the methods compare
(docs/results.md has the full sweep). The tiny run took 15 to 19 minutes on 2 busy CPU cores,
almost all of it XLA compilation (one program per method and variant); the full settings train
longer, not compile longer."""
        ),
        md("## 2. Train every method (builds TriDigits the first time, about a minute)"),
        code(
            """from experiments.tridigits import sweep

assert sweep.main(argv) == 0"""
        ),
        md("## 3. Tables: class@1 per split and the sign / collapse diagnostics"),
        code(
            """from IPython.display import Image, Markdown, display

text = (WORKDIR / "results.md").read_text()
table = text.split("<!-- tridigits-table:start -->")[1].split("<!-- tridigits-table:end")[0]
display(Markdown(table))""",
            "table",
        ),
        md("## 4. Learning curves and positive-pair cosines"),
        code(
            """for name in ("tridigits_curves.png", "tridigits_positive_cos.png"):
    display(Image(filename=str(WORKDIR / "figures" / name)))""",
            "plot",
        ),
        md(
            """## 5. Number of modalities: T-V vs T-VA vs T-VAS

Each variant of `experiments/ablations/modalities.py` puts 2, 3 or 4 modalities into the volume
(text, video, audio, subtitles). The full run fine-tunes released GRAM weights on MSR-VTT
(prepared with `gram-data`, see docs/) on a GPU: set `MODALITY_ARG = ""` and pass the weights
with `config.model_init` (the paper reports T2V R@1 55.7 / 58.4 / 64.0). Here `runlocal` trains
each variant's tiny towers for a few steps on the 4 reference clips: it shows the path and which
modalities each variant uses, not the paper's numbers (R@1 is chance, 25 %). The clips have no
subtitles, so the T-VAS run meets every subtitle as missing (dropped from each Gram matrix) and is
scored on text, video and audio: its row exercises the missing-modality path. The positive-tuple
volume (mean volume of each caption with its own clip, the paper's 1 - GRAM is 1 minus it) shows
how the count enters the volume: with 2 modalities it is |sin| of one angle, each added modality
multiplies in one more distance to a span. The 4 clips make one global batch, so this tiny run
needs at most 4 devices (a CPU or GPU runtime; a TPU runtime's 8 cores need the full data)."""
        ),
        code(
            """from experiments.ablations import modalities
from gram_jax.train import train_and_evaluate

MODALITY_ARG = "runlocal"
rows = {}
for variant in modalities.VARIANTS:  # by name: "tv", "tva", "tvas"
    cfg = modalities.get_config(",".join(t for t in (variant, MODALITY_ARG) if t))
    run_dir = WORKDIR / "modalities" / variant
    train_and_evaluate(cfg, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    evals = [m for m in map(json.loads, lines) if "eval" in m]  # the evaluations' lines
    rows[variant] = (cfg.model.modalities, evals[-1])"""
        ),
        code(
            """# Text-to-clip R@1 by volume, by cosine and after the matching re-rank (%), and the
# mean volume of the positive tuples.
keys = ["t2d/R@1", "cosine/t2d/R@1", "matching/t2d/R@1", "positive_volume"]
lines = ["| variant | modalities in the volume | " + " | ".join(keys) + " |"]
lines.append("|---" * (len(keys) + 2) + "|")
for variant, (mods, metrics) in rows.items():
    cells = " | ".join(f"{metrics.get(k, float('nan')):.3g}" for k in keys)
    lines.append(f"| {variant} | {', '.join(mods)} | {cells} |")
display(Markdown("\\n".join(lines)))""",
            "table",
        ),
    ]


NOTEBOOKS = {"quickstart": quickstart, "inference": inference, "ablations": ablations}
