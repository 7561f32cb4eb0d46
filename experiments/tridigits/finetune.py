"""TriDigits two-stage experiment: towers pretrained with pairwise cosine, then fine-tuned.

The paper fine-tunes towers pretrained with a pairwise cosine objective (VAST) with the volume
and compares against fine-tuning them with cosine. This is that comparison in miniature, one
command:

    python -m experiments.tridigits.finetune --folds 0,1,2,3 --seeds 0,1,2 \\
        --stage1_steps 300 --stage2_steps 100 --eval_points 4 --val_rule every_fourth \\
        --out runs/finetune

(the run whose files are committed in ``experiments/tridigits/runs/finetune``, and with ``--text
caption`` in ``runs/finetune_captions``; docs/results.md)

- stage 1 (the VAST stand-in): cosine InfoNCE anchored on text, from scratch, on the fold's
  ``fit`` voices (``arrays.DERIVED``: the training voices less those of ``val``, ``--val_rule``);
  each (fold, seed) run's parameters are saved (``<out>/stage1_params/fold<k>_seed<s>/params``,
  what ``config.model_init`` reads);
- stage 2, every arm of ``ARMS`` from the same stage-1 parameters of its (fold, seed), the same
  data order (the runner's order depends on (fold, seed) only) and a fresh optimizer: ``none`` (no
  further training: the stage-1 state), ``cosine_anchor`` (stage 1's objective continued),
  ``volume`` (GRAM's volume loss, no matching head), ``cosine_all_pairs``, ``volume_all_pairs``
  (the volume plus cosine InfoNCE over every pair);
- the budget: stage 2 is evaluated every ``stage2_steps / eval_points`` steps on ``val`` and
  ``test``; each run reports the test metrics at the step with the best ``val`` score
  (`selection_score`; the test split never chooses anything), and its whole curve;
- every arm is scored by the Gram volume and by the summed cosine
  (`gram_jax.evaluators.distinct`): class@1 over distinct queries, text identity (language and
  digit) where defined, the query counts.

Writes ``<out>/runs/<arm>_fold<k>_seed<s>.json`` (one per arm x fold x seed, small);
``python -m experiments.tridigits.aggregate --finetune-runs <out>/runs --results docs/results.md``
writes the paired table (finetune_table.py).

Cost (the committed run, 12 units x 5 arms, 2-core CPU shared with two other jobs, 2026-12-07):
98.9 minutes of wall time, 68 minutes of user CPU. Stage 1 (300 steps of the 12 runs vmapped,
evaluations included) 2,551 s, its first compilation ~7 minutes; stage 2 4.3-11.1 s per step of
the 12 runs together, varying with the load beside it (``stage2_seconds_per_step`` in each run
file, compilation excluded), ~3.5 minutes of compilation per arm. A 20-step probe at 16 units
ran ~5.5 s per step of stage 1 on the lightly loaded machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

from experiments.tridigits.arrays import VAL_RULES, TriDigitsArrays, identities
from experiments.tridigits.runner import SeedBatchRunner
from experiments.tridigits.tridigits_common import tridigits_config
from gram_jax.evaluators import distinct

# Stage 2's arms: tridigits_config keyword arguments (None: no stage 2, the stage-1 state).
STAGE1 = dict(loss="cosine_anchor")
ARMS: dict[str, dict | None] = {
    "none": None,
    "cosine_anchor": dict(loss="cosine_anchor"),
    "volume": dict(loss="volume", matching=False),
    "cosine_all_pairs": dict(loss="cosine_all_pairs"),
    "volume_all_pairs": dict(loss="volume", breaker="hybrid_all", matching=False),
}
EVAL_SPLITS = ("val", "test")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/finetune"))
    p.add_argument("--folds", type=_ints, default=[0, 1, 2, 3])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--arms", default=",".join(ARMS), help="comma list of " + ", ".join(ARMS))
    p.add_argument("--stage1_steps", type=int, default=300)
    p.add_argument("--stage2_steps", type=int, default=100)
    p.add_argument("--eval_points", type=int, default=4, help="stage-2 evaluations (budget)")
    p.add_argument("--stage1_lr", type=float, default=2e-3)
    p.add_argument("--stage2_lr", type=float, default=5e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--frames", type=int, default=2, help="frames read of the 8 stored")
    p.add_argument("--image_size", type=int, default=28)
    p.add_argument("--small", action="store_true", help="the small TriDigits variant (tests)")
    p.add_argument(
        "--val_rule",
        choices=VAL_RULES,
        default="kept_language",
        help="which training voices form the validation split (experiments/tridigits/arrays.py); "
        "the committed runs used every_fourth",
    )
    p.add_argument(
        "--text",
        choices=("word", "caption"),
        default="word",
        help="the texts: the number word, or the word and the video's motion (~350 distinct "
        "test texts per fold instead of ~40; data_pipelines/datasets/tridigits/captions.py)",
    )
    args = p.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown {unknown}; expected names of {list(ARMS)}")
    if args.stage1_steps < 1 or args.stage2_steps < 1:
        p.error("--stage1_steps and --stage2_steps must be >= 1")
    return args


def arm_config(kwargs: dict, steps: int, lr: float, args):
    """A trainer config of one stage: ``kwargs`` of tridigits_config, the run's sizes."""
    config = tridigits_config(
        **kwargs,
        total_steps=steps,
        batch_size=args.batch_size,
        frames=args.frames,
        image_size=args.image_size,
        small_data=args.small,
        text=args.text,
    )
    config.optim.lr = lr
    return config


def eval_steps(args) -> tuple[int, ...]:
    """Stage-2 steps at which val and test are scored (the last step included)."""
    every = max(args.stage2_steps // max(args.eval_points, 1), 1)
    return tuple(sorted({*range(every, args.stage2_steps + 1, every), args.stage2_steps}))


def selection_score(metrics: dict) -> float:
    """The budget criterion (computed on the validation split only): class@1 of the two primary
    directions under both scorings, averaged."""
    keys = [f"{d}/{s}" for d in distinct.PRIMARY for s in distinct.TUPLE_SCORINGS]
    return float(np.mean([metrics[k]["class@1"] for k in keys]))


def run_record(arm: str, fold: int, seed: int, curve: dict, settings: dict, extra: dict) -> dict:
    """One arm x fold x seed run file: test metrics at the val-chosen step, and the curve.

    curve: {step: {split: distinct.split_metrics(...)}}.
    """
    steps = sorted(curve)
    chosen = max(steps, key=lambda s: (selection_score(curve[s]["val"]), -s))
    test = curve[chosen]["test"]
    return {
        "arm": arm,
        "fold": fold,
        "seed": seed,
        "selected_step": chosen,
        "selection": "max over stage-2 eval steps of selection_score on val",
        "test": test,
        "val": curve[chosen]["val"],
        "queries": {
            d: v["queries"] for d, v in test.items() if isinstance(v, dict) and "queries" in v
        },
        "curve": [
            {
                "step": s,
                **{f"{sp}/score": selection_score(curve[s][sp]) for sp in EVAL_SPLITS},
            }
            for s in steps
        ],
        "settings": settings,
        **extra,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    runs = [(f, s) for f in args.folds for s in args.seeds]
    stage1 = arm_config(STAGE1, args.stage1_steps, args.stage1_lr, args)
    data = TriDigitsArrays(
        pathlib.Path(stage1.data.video_dir).parent,
        frames=args.frames,
        size=args.image_size,
        cache_dir=out / "cache",
        val_rule=args.val_rule,
    )

    def log(msg, tag="stage1"):
        print(f"{tag}: {msg}", flush=True)

    start = time.time()
    results = SeedBatchRunner(stage1).train(
        data, runs, log, eval_splits=EVAL_SPLITS, train_split="fit",
        save_params_dir=out / "stage1_params",
    )  # fmt: skip
    stage1_files = [r["params_file"] for r in results]
    stage1_info = {"stage1_seconds": round(time.time() - start, 1)}

    def metrics(i, split, embeddings):
        table = data.split(runs[i][0], split)
        return distinct.split_metrics(embeddings, table["label"], identities(table))

    for arm in args.arms.split(","):
        curves: list[dict] = [{} for _ in runs]
        if ARMS[arm] is None:
            for i, r in enumerate(results):
                curves[i][0] = {
                    sp: metrics(i, sp, r["splits"][sp]["embeddings"]) for sp in EVAL_SPLITS
                }
            extra = dict(stage1_info, stage2_seconds_per_step=None)
        else:
            config = arm_config(ARMS[arm], args.stage2_steps, args.stage2_lr, args)

            def on_eval(step, split, i, embeddings, labels, curves=curves):
                curves[i].setdefault(step, {})[split] = metrics(i, split, embeddings)

            trained = SeedBatchRunner(config).train(
                data, runs, lambda m, a=arm: log(m, a), eval_splits=EVAL_SPLITS,
                eval_steps=eval_steps(args), on_eval=on_eval, train_split="fit",
                init_files=stage1_files,
            )  # fmt: skip
            # Wall time per step of all runs of the arm together (vmapped), compilation excluded.
            extra = dict(stage1_info, stage2_seconds_per_step=trained[0]["seconds_per_step"])
        for i, (fold, seed) in enumerate(runs):
            record = run_record(arm, fold, seed, curves[i], settings, extra)
            path = out / "runs" / f"{arm}_fold{fold}_seed{seed}.json"
            path.write_text(json.dumps(record, indent=1, default=_json_default))
        print(f"{arm}: {len(runs)} run files in {out / 'runs'}", flush=True)
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
