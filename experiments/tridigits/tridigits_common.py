"""The TriDigits training configuration shared by the quickstart and the reproduction sweep.

``tridigits_config(...)`` starts from ``experiments/base_config.get_config()`` and changes the keys
a from-scratch run on 2 CPU cores needs: tiny towers (2-layer, width 64), 4 frames of 28x28, one
1.6 s filterbank slice, all parameters at one learning rate (the reference's slow vision group
exists for a pretrained EVA tower; here every tower starts from scratch), and GRAM's full recipe:
volume contrastive loss with label smoothing 0.1, learnable temperature (log-parametrised), the
data-anchor matching loss at weight 0.1 with hard negatives, and linear warm-up.

Two tower changes make from-scratch training work at all (docs/results.md, "What it took"):
the ViT gets a convolutional stem (two 3x3 stride-2 convs: a 7x7 grid of 4-pixel tokens) and pools
the mean of its patch tokens, and the text tower pools the mean of its tokens. With the reference's
patchify stem and CLS pooling, every randomly initialised video (and text) embedding is almost the
same vector (mean pairwise cosine 0.99-1.00), the contrastive loss is best served by keeping it
so, and every method ends at chance.
"""

from __future__ import annotations

import pathlib

import ml_collections

from data_pipelines.config import data_config
from data_pipelines.datasets import tridigits
from experiments import base_config
from gram_jax.config.loading import parse_config_arg
from gram_jax.convert.pretrained import minilm_params
from gram_jax.models.config import model_config


def build_options(small: bool = False, text: str = "word"):
    """TriDigits build options: the full default set, or a small one for smoke tests; ``text``:
    'word' (the number word) or 'caption' (the word and the video's motion)."""
    if small:
        return tridigits.BuildOptions(
            folds=4, images_per_class=12, test_images_per_class=4, text=text
        )
    return tridigits.BuildOptions(text=text)


# Symmetry breakers for GRAM trained from scratch (gram_jax/losses/schedule.py), by name: the
# config.loss keys each sets. Why each works: docs/results.md.
BREAKERS = {
    "none": {},
    "hybrid": dict(cosine_weight=1.0, cosine_pairs="anchor"),
    "hybrid_all": dict(cosine_weight=1.0, cosine_pairs="all_pairs"),
    # Cosine-only warm-up for a third of the run, then the volume; the matching loss starts with it.
    "staged": dict(cosine_warmup_steps=1 / 3, matching_start_step=1 / 3),
    "matching_late": dict(matching_start_step=1 / 3, matching_ramp_steps=1 / 6),
}
# Keys given above as a fraction of config.total_steps.
STEP_KEYS = ("cosine_warmup_steps", "matching_start_step", "matching_ramp_steps")


def apply_breaker(config: ml_collections.ConfigDict, breaker: str) -> ml_collections.ConfigDict:
    """Set the ``config.loss`` keys of ``BREAKERS[breaker]`` (step keys scaled to the run)."""
    if breaker not in BREAKERS:
        raise ValueError(f"TriDigits breaker {breaker!r}: expected one of {sorted(BREAKERS)}")
    for key, value in BREAKERS[breaker].items():
        config.loss[key] = int(round(value * config.total_steps)) if key in STEP_KEYS else value
    return config


def tridigits_config(
    *,
    loss: str = "volume",
    breaker: str = "none",
    text_init: str = "scratch",
    matching: bool | None = None,
    fold: int = 0,
    seed: int = 0,
    total_steps: int = 400,
    batch_size: int = 32,
    small_data: bool = False,
    data_root: str | None = None,
    build: bool = True,
    frames: int = 4,
    image_size: int = 28,
    text_vocab: str | None = None,
    text: str = "word",
) -> ml_collections.ConfigDict:
    """A full trainer config for TriDigits.

    Args:
      loss: a `gram_jax.losses.LOSSES` name; 'volume' is GRAM (with the matching loss); the
        baselines train their own contrastive loss only (matching weight 0), as their papers do.
      breaker: a ``BREAKERS`` name: the symmetry breaker added to the loss ('none': the paper's
        recipe).
      matching: train GRAM's matching (DAM) head and loss; default: for 'volume' only. False
        drops the head (it adds ~45 % to the step's cost and learns nothing from scratch here).
      text_init: 'scratch' (the 2x64 text tower, random) or 'minilm' (the real all-MiniLM-L6-v2
        text tower, 6x384, via ``config.model_init``; converted once into a cache by
        `gram_jax.convert.pretrained.minilm_params`), trained at lr 5e-5 (the from-scratch rate
        would overwrite what it knows).
      fold: which voice fold is held out for testing (0..folds-1).
      seed: initialisation / dropout / hard-negative seed (the data order derives from it too).
      total_steps: train steps of ``batch_size`` records.
      small_data: build and read the small TriDigits variant (12 images per digit) for smoke runs.
      data_root: an existing TriDigits build; default: the cache (built here when absent).
      build: build the dataset when absent (False: only compute its path).
      frames, image_size: frames per video read from the 8 stored ones, and their side (a
        multiple of the stem's 4-pixel stride; the dataset stores 28x28).
      text_vocab: 'dataset' (the build's own vocab.txt: every number word one token, no two
        texts share ids; the default from scratch) or 'bert' (bert-base-uncased's, which maps 10
        Korean/Chinese/Japanese words to the same [UNK]; docs/results.md's runs used it). The
        MiniLM warm start needs 'bert' (its embedding rows are BERT's ids) and defaults to it.
      text: what a record's text holds: 'word' (the number word, ~40 distinct texts per test
        split) or 'caption' (the word and how the video moves, ~350;
        data_pipelines/datasets/tridigits/captions.py), each its own build.
    """
    if matching is None:
        matching = loss == "volume"
    if text_vocab is None:
        text_vocab = "bert" if text_init == "minilm" else "dataset"
    if text_vocab not in ("dataset", "bert"):
        raise ValueError(f"TriDigits text_vocab={text_vocab!r}: expected 'dataset' or 'bert'")
    if text_init == "minilm" and text_vocab != "bert":
        raise ValueError(
            "TriDigits text_init='minilm' with text_vocab='dataset': the MiniLM weights embed "
            "bert-base-uncased's ids; use text_vocab='bert'"
        )
    config = base_config.get_config()
    options = build_options(small_data, text)
    root = pathlib.Path(data_root) if data_root else tridigits.default_out_dir(options)
    if build:
        tridigits.ensure_built(root, options)

    config.model = model_config(
        "tiny",
        embed_dim=64,
        text=dict(pool="mean", **({"size": "minilm"} if text_init == "minilm" else {})),
        vision=dict(
            image_size=image_size,
            max_frames=frames,
            patch_size=4,
            stem_channels=(16, 32),
            pool="mean",
        ),
        audio=dict(max_clips=1),
        matching=dict(enabled=matching),
    )
    overrides = tridigits.data_overrides(root, fold, options)
    # The dataset's 28x28 frames may also be read at 56x56 (exact 2x upsampling).
    overrides.update(image_size=image_size, num_frames=frames)
    if text_vocab == "bert":
        # bert-base-uncased's vocabulary: words of scripts it lacks become [UNK].
        overrides["vocab_file"] = None
    config.data = data_config(
        **overrides,
        batch_size=batch_size,
        eval_batch_size=64,
        seed=seed,
        read_threads=2,
        worker_count=0,
    )
    config.loss.name = loss
    config.loss.matching_weight = 0.1 if matching else 0.0
    config.optim.lr = 5e-4
    config.optim.lr_groups = ml_collections.ConfigDict()
    config.optim.grad_clip_norm = 1.0
    config.schedule.name = "warmup_linear"
    config.schedule.warmup_fraction = 0.1
    config.total_steps = total_steps
    config.checkpoint_steps = total_steps
    config.keep_checkpoints = 1
    config.log_every = 25
    config.eval_every = 0
    config.seed = seed
    config.progress_bar = True
    if text_init == "minilm":
        config.model_init = str(minilm_params())
        # MiniLM is a text encoder only: every other part, and the fusion cross-attention it
        # lacks, starts from init (gram_jax.convert.params_file refuses anything unnamed).
        config.model_init_allow_missing = (
            "vision/*",
            "audio/*",
            "heads/*",
            "condition_tokens/*",
            "match_head/*",
            "contra_temperature/*",
            "bert/layers/cross_*",
        )
        config.optim.lr_groups.text = dict(pattern=r"^bert/", lr=5e-5)
    elif text_init != "scratch":
        raise ValueError(f"TriDigits text_init={text_init!r}: expected 'scratch' or 'minilm'")
    return apply_breaker(config, breaker)


_INT_KEYS = ("fold", "seed", "steps", "batch_size", "frames", "image_size")


def parse_arg(arg: str | None) -> dict:
    """``'fold=1,seed=2,steps=300,small'`` -> keyword arguments of ``tridigits_config``.

    ``steps`` sets total_steps; ``small`` selects the small dataset variant; ``runlocal`` is
    ``small`` plus 2 steps at batch 8 on 2 frames of 28x28 (the smoke test of every config);
    ``minilm`` warm-starts the text tower from the real all-MiniLM-L6-v2 weights; ``captions``
    reads the caption build (the number word and the video's motion).
    """
    parsed = parse_config_arg(
        arg,
        source="TriDigits config",
        words=("small", "runlocal", "minilm", "captions"),
        keys=(*_INT_KEYS, "data_root"),
    )
    kwargs: dict = {}
    if parsed.has("small"):
        kwargs["small_data"] = True
    if parsed.has("minilm"):
        kwargs["text_init"] = "minilm"
    if parsed.has("captions"):
        kwargs["text"] = "caption"
    if parsed.has("runlocal"):
        kwargs.update(small_data=True, total_steps=2, batch_size=8, frames=2, image_size=28)
    for key, value in parsed.values.items():
        if key == "data_root":
            kwargs["data_root"] = value
            continue
        try:
            kwargs["total_steps" if key == "steps" else key] = int(value)
        except ValueError:
            raise ValueError(
                f"TriDigits config: {key}={value!r} in {arg!r} is not an integer"
            ) from None
    return kwargs
