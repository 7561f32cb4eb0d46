"""Choose the quickstart's step budget on validation voices, never on its test split.

The quickstart (experiments/quickstart.py) must print every retrieval direction above chance and
finish within its time budget. This trains its exact recipe (same config, ``steps`` changed) on
fold 0's ``fit`` voices for each budget and seed (seeds vmapped, `runner.SeedBatchRunner`) and
scores the ``val`` voices (`arrays.DERIVED`: training voices the fit runs never hear, the
stand-in for the test split's unseen voices) with `gram_jax.evaluators.distinct`:

    python -m experiments.tridigits.quickstart_budget --budgets 300,450 --seeds 0,1,2 \\
        --out experiments/tridigits/runs/quickstart_budget

writes ``<out>/budget<steps>.json`` (class@1 over distinct queries per direction and seed, the
query counts, the wall time) and prints the table. The rule (fixed before the run): the smallest
budget whose every pairwise direction and both text <-> (video, audio) directions are above chance
(0.1) in every seed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

from experiments import quickstart
from experiments.tridigits.arrays import TriDigitsArrays, identities
from experiments.tridigits.runner import SeedBatchRunner
from gram_jax.evaluators import distinct

CHANCE = 0.1
# The directions the quickstart prints (pairwise by cosine, the joint ones by the volume).
DIRECTIONS = tuple(f"{q}->{c}" for q, c in distinct.PAIRWISE) + tuple(
    f"{d}/volume" for d in distinct.PRIMARY
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run_budget(steps: int, seeds: list[int], data, log=print) -> dict:
    """Train the quickstart recipe for ``steps`` on fold 0's fit voices, one run per seed."""
    config = quickstart.get_config(f"steps={steps}")
    start = time.time()
    results = SeedBatchRunner(config).train(
        data, [(0, s) for s in seeds], log, eval_splits=("val",), train_split="fit"
    )
    table = data.split(0, "val")
    per_seed = {}
    for seed, result in zip(seeds, results, strict=True):
        metrics = distinct.split_metrics(
            result["splits"]["val"]["embeddings"], table["label"], identities(table)
        )
        per_seed[str(seed)] = {d: metrics[d]["class@1"] for d in DIRECTIONS}
        queries = {d: metrics[d]["queries"] for d in DIRECTIONS}
    return {
        "steps": steps,
        "seeds": seeds,
        "split": "fold 0 val (training voices held out of fit)",
        "class@1": per_seed,
        "queries": queries,
        "above_chance_in_every_seed": all(
            v > CHANCE for seed in per_seed.values() for v in seed.values()
        ),
        "seconds": round(time.time() - start, 1),
    }


def chosen_budget(records: list[dict]) -> int | None:
    """The rule: the smallest budget above chance in every direction and seed (None: none is)."""
    passing = [r["steps"] for r in records if r["above_chance_in_every_seed"]]
    return min(passing) if passing else None


def load_records(folder: pathlib.Path) -> list[dict]:
    """The ``budget<steps>.json`` files of ``folder``, by budget."""
    records = [json.loads(p.read_text()) for p in pathlib.Path(folder).glob("budget*.json")]
    return sorted(records, key=lambda r: r["steps"])


def table(records: list[dict]) -> str:
    """Markdown: per budget and direction, the mean and the minimum over seeds."""
    lines = [
        "| steps | " + " | ".join(DIRECTIONS) + " | all above chance |",
        "|---" * (len(DIRECTIONS) + 2) + "|",
    ]
    for r in sorted(records, key=lambda r: r["steps"]):
        cells = []
        for d in DIRECTIONS:
            values = [s[d] for s in r["class@1"].values()]
            cells.append(f"{np.mean(values):.3f} (min {min(values):.3f})")
        yes = "yes" if r["above_chance_in_every_seed"] else "no"
        lines.append(f"| {r['steps']} | " + " | ".join(cells) + f" | {yes} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budgets", type=_ints, default=[300, 450])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/quickstart_budget"))
    p.add_argument("--cache", type=pathlib.Path, default=None, help="decoded-media cache folder")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(args.out / "jax_cache"))
    config = quickstart.get_config()
    data = TriDigitsArrays(
        pathlib.Path(config.data.video_dir).parent,
        frames=config.data.num_frames,
        size=config.data.image_size,
        cache_dir=args.cache or args.out / "cache",
    )
    for steps in args.budgets:
        record = run_budget(steps, args.seeds, data, lambda m, s=steps: print(f"{s}: {m}"))
        (args.out / f"budget{steps}.json").write_text(json.dumps(record, indent=1) + "\n")
    # Every budget in the folder (earlier invocations included) enters the table and the rule.
    records = load_records(args.out)
    print(table(records))
    print(f"chosen budget: {chosen_budget(records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
