"""TriDigits miniature reproduction: GRAM vs four baselines, K voice folds x seeds.

Usage (resumable, every finished run is a JSON file):

    nohup python -m experiments.tridigits.sweep --workdir workdirs/tridigits_sweep \\
        > workdirs/tridigits_sweep.log 2>&1 &

Each method's config is ``experiments/tridigits/<method>.py`` (the configs ``gram-train`` runs);
all (fold, seed) runs of a method train together, vmapped (``runner.SeedBatchRunner``), on media
decoded once through the real pipeline (``arrays.TriDigitsArrays``). Each run writes
``<workdir>/runs/<method>_fold<k>_seed<s>.json`` (retrieval table with the method's own tuple
scoring, collapse metrics, loss history, settings); after each method ``aggregate.py`` rewrites
the table in docs/results.md (mean and 95 % CI over runs).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

from experiments.tridigits import aggregate
from experiments.tridigits.arrays import TriDigitsArrays
from experiments.tridigits.runner import SeedBatchRunner
from gram_jax.config.loading import load_config_module
from gram_jax.evaluators import diagnostics, report
from gram_jax.evaluators.scoring import scoring_for_loss

HERE = pathlib.Path(__file__).resolve().parent

METHODS = {  # method -> loss name; gram* keep GRAM's recipe (matching loss, learnable temperature)
    "gram": "volume",
    "gram_hybrid": "volume",  # + 1.0 x cosine InfoNCE anchored on text (config.loss.cosine_weight)
    "gram_hybrid_all": "volume",  # + 1.0 x cosine InfoNCE over all pairs
    "gram_hybrid_all_no_matching": "volume",  # the same without the matching loss (the quickstart)
    "gram_staged": "volume",  # cosine-only warm-up for the first third of the steps, then GRAM
    "gram_matching_late": "volume",  # matching weight 0 for a third of the steps, then ramped
    "gram_minilm": "volume",  # the text tower warm-started from real all-MiniLM-L6-v2 weights
    "cosine_anchor": "cosine_anchor",
    "cosine_all_pairs": "cosine_all_pairs",
    "symile": "symile",
    "area": "area",
}
# Held-out splits of TriDigits v2 (data_pipelines/datasets/tridigits/splits.py): unseen voices,
# held-out images with training recordings (`test_seen`), and a training sample (train-split
# retrieval beside the held-out splits).
SPLITS = ("test", "test_seen", "train_sample")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("workdirs/tridigits_sweep"))
    p.add_argument(
        "--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS)
    )
    p.add_argument("--folds", type=_ints, default=[0, 1, 2, 3])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument(
        "--curve-points", type=int, default=4, help="evaluations along training (learning curves)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--frames", type=int, default=4, help="frames read of the 8 stored")
    p.add_argument(
        "--image-size", type=int, default=28, help="frame side: 28 (a 7x7 token grid) or 56"
    )
    p.add_argument("--small", action="store_true", help="the small TriDigits variant (tests)")
    p.add_argument("--results", type=pathlib.Path, default=HERE.parents[1] / "docs" / "results.md")
    p.add_argument(
        "--table-name",
        default=aggregate.DEFAULT_NAME,
        help="the generated block of --results this sweep rewrites (and its figures' names)",
    )
    return p.parse_args(argv)


def method_config(method: str, args):
    """The method's experiment config with the sweep's run length and sizes."""
    module = load_config_module(HERE / f"{method}.py")
    arg = f"steps={args.steps},batch_size={args.batch_size},frames={args.frames}"
    arg += ",small" if args.small else ""
    config = module.get_config(f"{arg},image_size={args.image_size}")
    config.optim.lr = args.lr
    return config


def split_record(scoring: str, embeddings: dict, labels) -> dict:
    """Retrieval table (the method's tuple scoring), cosine-sum tuple scoring, collapse and the
    sign / sign-invariant diagnostics of one split's embeddings."""
    pairs = [("text", "video"), ("text", "audio"), ("video", "audio")]
    return {
        "retrieval": report.retrieval_table(embeddings, labels, scoring),
        # The same embeddings scored by the sum of cosines, to separate objective and scoring.
        "retrieval_cosine_tuple": report.retrieval_table(embeddings, labels, "cosine")[
            "text->video+audio"
        ],
        "collapse": report.collapse_metrics(embeddings),
        "diagnostics": diagnostics.pair_diagnostics(embeddings, pairs, labels),
        "records": int(len(labels)),
    }


def run_record(method: str, config, result: dict, settings: dict, curve: list) -> dict:
    scoring = report.scoring_for_loss(config.loss.name)
    splits = {
        name: split_record(scoring, s["embeddings"], s["labels"])
        for name, s in result["splits"].items()
    }
    test = result["splits"]["test"]["embeddings"]
    return {
        "method": method,
        "loss": config.loss.name,
        "fold": result["fold"],
        "seed": result["seed"],
        "scoring": scoring,
        **splits["test"],
        "splits": splits,
        "curve": curve,
        # Positive-pair cosines of the unseen-voice test split (the mechanism figure).
        "positive_cos": {
            f"{a}_{b}": diagnostics.positive_cosines(test[a], test[b]).round(4).tolist()
            for a, b in (("text", "video"), ("text", "audio"), ("video", "audio"))
        },
        "final_train": {k: v for k, v in result["history"][-1].items() if np.ndim(v) == 0},
        "history": result["history"],
        "seconds_for_all_runs_of_this_group": round(result["seconds"], 1),
        "settings": settings,
    }


def curve_point(step: int, split: str, scoring: str, embeddings: dict, labels) -> dict:
    """class@1 of the headline directions and the video collapse at one evaluation step."""
    table = report.retrieval_table(embeddings, labels, scoring)
    out = {"step": step, "split": split}
    out |= {f"{d}/class@1": table[d]["class@1"] for d in table}
    out |= {f"collapse/{m}": c["mean_cos"] for m, c in report.collapse_metrics(embeddings).items()}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    # Compiled programs are cached on disk: a re-run (or a resumed sweep) skips XLA compilation,
    # which costs minutes per method on a small CPU.
    jax.config.update("jax_compilation_cache_dir", str(args.workdir / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    runs_dir = args.workdir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    data = None
    for method in args.methods.split(","):
        if method not in METHODS:
            raise SystemExit(f"--methods: unknown method {method!r}; expected {list(METHODS)}")
        todo = [
            (f, s)
            for f in args.folds
            for s in args.seeds
            if not (runs_dir / f"{method}_fold{f}_seed{s}.json").exists()
        ]
        if not todo:
            print(f"{method}: all runs done", flush=True)
            continue
        config = method_config(method, args)
        if data is None:
            root = pathlib.Path(config.data.video_dir).parent
            data = TriDigitsArrays(
                root, frames=args.frames, size=args.image_size, cache_dir=args.workdir / "cache"
            )
        start = time.time()
        print(f"{method}: {len(todo)} runs, compiling", flush=True)
        runner = SeedBatchRunner(config)
        scoring = scoring_for_loss(config.loss.name)
        curves: dict[int, list] = {i: [] for i in range(len(todo))}
        every = max(args.steps // max(args.curve_points, 1), 1)

        def on_eval(step, split, i, emb, labels, scoring=scoring, curves=curves):
            curves[i].append(curve_point(step, split, scoring, emb, labels))

        results = runner.train(
            data,
            todo,
            log=lambda msg, m=method: print(f"{m}: {msg}", flush=True),
            eval_splits=SPLITS,
            eval_steps=tuple(range(every, args.steps + 1, every)),
            on_eval=on_eval,
        )
        for i, result in enumerate(results):
            record = run_record(method, config, result, settings, curves[i])
            path = runs_dir / f"{method}_fold{result['fold']}_seed{result['seed']}.json"
            path.write_text(json.dumps(record, indent=1))
        print(f"{method}: done in {time.time() - start:.0f} s", flush=True)
        aggregate.write_results(runs_dir, args.results, args.table_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
