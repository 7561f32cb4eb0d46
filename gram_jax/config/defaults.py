"""Defaults of the trainer's own config sections (everything except ``model`` and ``data``).

`experiments/base_config.py` documents every key and combines these with the model and data
defaults; `gram_jax.config.validation` uses them as the set of valid keys.
"""

from __future__ import annotations

import ml_collections

# Sections whose keys are user-chosen names (evaluator, learning-rate group and split names).
OPEN_SECTIONS = ("evals", "optim.lr_groups", "data.annotations", "loss.options")


def trainer_defaults() -> ml_collections.ConfigDict:
    """loss, optim, schedule, mesh, distributed and the run-level keys, with default values."""
    config = ml_collections.ConfigDict()
    config.loss = dict(
        name="volume",
        anchor="text",
        label_smoothing=0.1,
        gather_mode="global",
        matching_weight=0.1,
        # Symmetry breakers for training from scratch (gram_jax/losses/schedule.py); all off, the
        # paper's recipe: hybrid lambda * cosine InfoNCE ('anchor' | 'all_pairs'), a cosine-only
        # warm-up of N steps (staged recipe), and a matching weight that is 0 before
        # matching_start_step and ramps up linearly over matching_ramp_steps.
        cosine_weight=0.0,
        cosine_pairs="anchor",
        cosine_warmup_steps=0,
        matching_start_step=0,
        matching_ramp_steps=0,
        # Extra keyword arguments of the chosen LOSSES entry, e.g. Symile's negative_sampling,
        # sigmoid's bias or the area's form; validated by the loss function's signature.
        options=dict(),
    )
    config.optim = dict(
        name="adamw",
        lr=2e-5,
        b1=0.9,
        b2=0.98,
        eps=1e-6,
        weight_decay=0.01,
        decay_embeddings=False,
        # 'structural' (above) or 'released_names' (the released rule; gram_jax.config.fidelity
        # row 9).
        decay_mask="structural",
        grad_clip_norm=0.0,
        accumulation_steps=1,
        # The vision tower (GramModel.vision) trains at the reference's clip_lr, which matched the
        # torch names containing 'visual': the EVA tower only, not its head or fusion projections.
        lr_groups=dict(vision=dict(pattern=r"^vision/", lr=5e-7)),
    )
    config.schedule = dict(
        name="warmup_linear", warmup_fraction=0.1, warmup_steps=0, end_factor=0.0
    )
    config.mesh = dict(data=-1, fsdp=1, model=1)
    # enabled: 'auto' joins a cluster JAX detects (or the explicit address), 'on' always calls
    # jax.distributed.initialize(), 'off' never does (parallel.maybe_initialize_distributed).
    config.distributed = dict(enabled="auto", coordinator_address="", num_processes=1, process_id=0)
    config.total_steps = 10_000
    # Epochs over the records actually kept (after filters): when set, total_steps is derived as
    # records // data.batch_size * num_epochs (logged) and the total_steps value is not used.
    # None or 0 (``--config.num_epochs=0`` on the command line): total_steps as set, nothing read.
    config.num_epochs = None
    # N > 0: once the run length is known (after num_epochs), eval_every = total_steps // N - 1 and
    # checkpoint_steps = total_steps // N (the released code evaluates every
    # num_train_steps // 10 - 1 steps: N = 10); 0 keeps eval_every and checkpoint_steps as set.
    config.evals_per_run = 0
    config.checkpoint_steps = 1_000
    # Keep the newest N checkpoints, plus always the newest known-good one (gram_jax.train.guard).
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.log_every = 50
    config.eval_every = 0
    config.eval_at_start = False
    config.evals = ml_collections.ConfigDict()
    config.seed = 50
    config.resume = ""
    config.model_init = ""
    # fnmatch patterns of '/'-joined parameter paths that config.model_init may leave at their
    # initial values (e.g. ("vision/*", "audio/*") for a file holding only the text tower); any
    # other parameter the file lacks refuses the load (gram_jax.convert.params_file).
    config.model_init_allow_missing = ()
    # "module:function" called on every process (it may gather over them; it writes on process 0)
    # after the last evaluation of a run that trained, as fn(config, trainer, state, workdir)
    # (e.g. the quickstart's table and embedding plot, gram_jax.evaluators.report:report_run).
    config.report = ""
    config.progress_bar = True
    # What a divergence (a non-finite value, or a loss above divergence_factor x the first loss)
    # does: "stop" with an error naming the last good checkpoint, or "rollback" to it, skipping the
    # offending batch, at most max_rollbacks times per process.
    config.on_nonfinite = "stop"
    config.max_rollbacks = 3
    config.divergence_factor = 100.0
    # Start from scratch in a workdir whose metrics.jsonl holds an earlier run (moved aside).
    config.overwrite = False
    # Keep the best checkpoint by an evaluation metric ("<eval name>/<metric>", e.g.
    # "reference_clips/t2d/R@1") in W/best/, apart from the final state; "" = off.
    config.best_metric = ""
    config.best_mode = "max"
    # gram_jax.config.fidelity: '' (every key as set), 'released' or 'improved' (sets every row's
    # key); fidelity_exceptions: dotted keys the switch leaves as set.
    config.fidelity = ""
    # gram_jax.config.protocol: '' (keys as set), 'standard_1ka' (every test video, missing audio
    # marked absent) or 'released_audio_filtered' (videos without readable audio dropped, 884 of
    # MSR-VTT's 1,000); sets data.caption_mode/filter_audio/bad_data and the retrieval evaluators'
    # captions/require together.
    config.protocol = ""
    config.fidelity_exceptions = ()
    return config
