"""The default GRAM training configuration; every experiment config starts from `get_config()`.

Usage: ``gram-train --config experiments/base_config.py[:runlocal] --workdir W``; other configs do
``config = base_config.get_config()`` and change a few keys.

Units: ``total_steps`` counts train steps, each on one *global* batch of ``data.batch_size`` rows
(split over all processes and devices). The reference counts ``len(dataset) // batch_size * epochs``
steps with its batch size global over 4 GPUs, so a reference run of E epochs on N records at batch B
is ``total_steps = N // B * E`` here, independent of the device count; ``num_epochs = E`` derives
exactly that from the records actually kept (logged).

Keys (every one is read by the trainer; `gram_jax.config.validation` rejects unknown ones):

- ``model``: `gram_jax.models.config.model_config('base', dtype='bfloat16')` (ViT-B/16 frames,
  BEATs-base, BERT-base; see gram_jax/models/config.py for its keys).
- ``data``: `data_pipelines.config.data_config()` (annotations, media, batch size, frames).
- ``loss``:
  - ``name``: a `gram_jax.losses.LOSSES` key; ``'volume'`` = GRAM's volume contrastive loss.
  - ``anchor``: the modality whose embedding is the anchor (``'text'``).
  - ``label_smoothing``: 0.1, as the reference's smoothed cross-entropy.
  - ``gather_mode``: ``'global'`` (exact global-batch loss), ``'local'`` (shard_map, less memory) or
    ``'reference'`` (gathered copies detached, as the released code).
  - ``matching_weight``: lambda of the data-anchor matching loss (0.1; 0 turns it and its
    hard-negative sampling off).
  - symmetry breakers for training from scratch (`gram_jax.losses.schedule`; all off here, the
    paper's recipe): ``cosine_weight`` (lambda of a pairwise cosine InfoNCE term added to the
    main loss, 0), ``cosine_pairs`` ('anchor' | 'all_pairs'), ``cosine_warmup_steps`` (train the
    cosine term alone for the first N steps, then the main loss: the staged recipe, 0),
    ``matching_start_step`` / ``matching_ramp_steps`` (the matching weight is 0 before the start
    step and ramps linearly to ``matching_weight``; 0 / 0).
- ``optim`` (`gram_jax.optim`): ``name`` ('adamw'), ``lr`` (peak lr of every parameter outside the
  groups, 2e-5), ``b1`` 0.9, ``b2`` 0.98, ``eps`` 1e-6, ``weight_decay`` 0.01, ``decay_embeddings``
  (False), ``grad_clip_norm`` (0 = off, as the reference in effect), ``accumulation_steps`` (1),
  ``lr_groups`` ({group: {pattern: regex searched in the '/'-joined param path, lr}}; default
  ``vision`` = ``^vision/`` at 5e-7, the reference's clip_lr of the EVA tower).
- ``schedule``: ``name`` ('warmup_linear' | 'cosine' | 'constant'), ``warmup_fraction`` (0.1),
  ``warmup_steps`` (0 = use the fraction), ``end_factor`` (cosine floor, fraction of the peak).
- ``mesh``: ``data`` (-1 = all remaining devices), ``fsdp`` (1), ``model`` (1) axis sizes.
- ``distributed``: ``enabled`` ('auto': join the cluster JAX's own detection finds (Cloud TPU VM
  slice, GKE, SLURM, Kubernetes, Open MPI) or the explicit address; 'on': always call
  `jax.distributed.initialize()`; 'off': never), ``coordinator_address``, ``num_processes``,
  ``process_id`` (explicit values for launchers JAX does not detect: plain SSH, local processes).
- ``total_steps`` (or ``num_epochs``, None: epochs over the kept records, which then sets it),
  ``checkpoint_steps`` (save every K steps; also at the end and on SIGTERM), ``keep_checkpoints``
  (keep-N, plus always the newest known-good one), ``async_checkpoints`` (True), ``log_every``
  (train metrics every N steps), ``eval_every`` (0 = only at the end), ``eval_at_start`` (the
  reference evaluates first).
- ``on_nonfinite`` ('stop' | 'rollback'), ``max_rollbacks`` (3), ``divergence_factor`` (100; a
  loss above that x the first one counts as divergence, 0 = only NaN/inf): docs/reliability.md.
- ``overwrite``: start over in a workdir that holds an earlier run's metrics (False: refused).
- ``best_metric`` ('<eval>/<metric>', '' = off) and ``best_mode`` ('max' | 'min'): keep the best
  state in ``W/best`` apart from the final one (the released code's ``--save_best``).
- ``evals``: {name: dict(type='retrieval' | 'classification', split=..., ...)}; the keys of each
  entry are documented in `gram_jax.evaluators.runner` (run at the end, every ``eval_every``
  steps, and by ``gram-eval``).
- ``seed``: the seed of initialisation, dropout and hard-negative sampling (50, as the reference).
- ``resume``: a checkpoint directory (a `W/checkpoints` of another run) to continue from when the
  workdir has none.
- ``model_init``: a converted-weights file (gram-convert output, .msgpack or orbax dir) whose
  parameters initialise the model when there is nothing to resume. Every parameter the file lacks
  must be named by a pattern of ``model_init_allow_missing`` (fnmatch over '/'-joined paths,
  e.g. ``("vision/*",)``), or the load is refused with the list.
- ``progress_bar``: show tqdm when stderr is a terminal.
"""

from __future__ import annotations

import ml_collections

from data_pipelines.config import data_config
from data_pipelines.datasets.reference_clips import LAYOUT, MEDIA_DIR
from gram_jax.config.defaults import trainer_defaults
from gram_jax.config.loading import parse_config_arg
from gram_jax.models.config import model_config, tiny_model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The full default config; ``arg='runlocal'`` shrinks it for a one-minute CPU run."""
    config = ml_collections.ConfigDict()
    # The base configuration: ViT-B/16 frames, BEATs-base, BERT-base, bf16 matmuls.
    config.model = model_config("base", dtype="bfloat16")
    config.data = data_config()

    # The trainer's own sections (loss, optim, schedule, mesh, run length...) live in the library,
    # so that config validation knows every valid key even when experiments/ is not importable.
    for key, value in trainer_defaults().items():
        config[key] = value

    if parse_config_arg(arg, source="experiments/base_config.py", words=("runlocal",)).has(
        "runlocal"
    ):
        runlocal(config)
    return config


def reference_clips_data(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`data` pointed at the 4 real reference clips committed in the repository
    (`data_pipelines.datasets.reference_clips`, read in place): global batch 4, 2 small frames,
    short audio. Cheap: builds the config only, touches no file."""
    annotations = str(MEDIA_DIR / LAYOUT.annotations["test"])
    return data_config(
        dataset=LAYOUT.name,
        annotations=dict(train=annotations, test=annotations),
        video_dir=str(MEDIA_DIR / LAYOUT.video_dir),
        audio_dir=str(MEDIA_DIR / LAYOUT.audio_dir),
        modalities=("video", "audio", "text"),
        num_frames=2,
        image_size=56,  # the tiny ViT's position table (patch 14, 4 x 4 grid)
        audio=dict(mel_bins=data.audio.mel_bins, target_length=128, num_clips=1),
        text_max_len=dict(text=16, subtitle=16),
        batch_size=4,
        eval_batch_size=4,
        seed=data.seed,
        read_threads=2,
        prefetch_buffer_size=4,
    )


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks `config` in place to train on CPU in about a minute: tiny towers, few steps, the
    real local media (the 4 reference clips, global batch 4), no pretrained weights. Returns it."""
    config.model = tiny_model_config(config.model)
    config.data = reference_clips_data(config.data)
    config.total_steps = 4
    config.checkpoint_steps = 2
    config.keep_checkpoints = 2
    config.log_every = 1
    config.eval_every = 0
    # The same 4 clips are the evaluation set: a check that evaluation runs, not a benchmark.
    config.evals = ml_collections.ConfigDict(
        {
            "reference_clips": dict(
                type="retrieval", split="test", scorings=("volume", "cosine", "matching"), top_k=3
            )
        }
    )
    config.model_init = ""
    config.resume = ""
    config.progress_bar = False
    return config
