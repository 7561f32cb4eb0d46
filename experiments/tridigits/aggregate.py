"""Aggregate the TriDigits sweep: mean and 95 % confidence interval per method and metric.

``python -m experiments.tridigits.aggregate --runs workdirs/tridigits_sweep/runs`` rewrites the
generated part of docs/results.md (between the ``tridigits-table`` markers; ``--name long`` writes
the ``long-table`` block and ``long_*.png`` figures instead); text outside the
markers (the discussion) is kept.

The fine-tuning comparisons (finetune.py, finetune_table.py) are generated from the run files
committed under ``experiments/tridigits/runs/<block>`` (``FINETUNE_BLOCKS``: ``finetune``, the
number-word texts; ``finetune_captions``, the caption build): ``--finetune-runs DIR
[--finetune-block NAME]`` writes one block (``<NAME>-table`` markers), and ``python -m
experiments.tridigits.aggregate --check docs/results.md`` regenerates every block from the
committed run files and exits 1 (printing a diff) when a block differs or is missing. The
from-scratch sweep's run files were never committed, so its tables are not checked.

The interval is mean +- t(0.975, n-1) * sd / sqrt(n) over the n (fold, seed) runs of a method.
Runs of different folds test different voices, so the interval covers voice and seed variation.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import math
import pathlib
import sys

from experiments.tridigits import finetune_table

# A results file may hold several generated blocks (e.g. the main sweep and a longer budget), each
# between its own markers and with its own figures; "tridigits" is the main sweep's.
DEFAULT_NAME = "tridigits"


def markers(name: str = DEFAULT_NAME) -> tuple[str, str]:
    """The (start, end) comment lines around the generated block called ``name``."""
    return f"<!-- {name}-table:start -->", f"<!-- {name}-table:end -->"


START, END = markers()
# Two-sided 95 % Student t quantiles by degrees of freedom (1..30); 1.96 beyond.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip
DIRECTIONS = [
    ("text->video+audio", "T→(V,A)"),
    ("video->audio", "V→A"),
    ("audio->video", "A→V"),
    ("text->video", "T→V"),
    ("text->audio", "T→A"),
]
METHOD_ORDER = [
    "cosine_anchor",
    "cosine_all_pairs",
    "symile",
    "area",
    "gram",
    "gram_hybrid",
    "gram_hybrid_all",
    "gram_hybrid_all_no_matching",
    "gram_staged",
    "gram_matching_late",
    "gram_minilm",
]
SPLIT_TITLES = {
    "test": "held-out images, unseen voices",
    # The seen voices' recordings are the training clips themselves (one clip per voice and digit).
    "test_seen": "held-out images, training recordings",
    "train_sample": "training records (500 sampled)",
}
PAIRS = (("t", "v"), ("t", "a"), ("v", "a"))


# The sweep settings that change what a run trains (not which runs or where they are written).
RUN_SETTINGS = ("steps", "batch_size", "lr", "frames", "image_size", "small")


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t interval); half-width 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 2 < len(T975) else 1.96
    return mean, t * sd / math.sqrt(n)


def _cell(values: list[float]) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.3f} ± {half:.3f}"


# The paired comparisons, run for run: every method against cosine anchored (the objective GRAM
# claims to beat), and the GRAM variants against cosine over all pairs (what the volume adds to a
# pairwise objective that already trains video <-> audio).
BASELINE = "cosine_anchor"
PAIRED_BASELINES = {BASELINE: "", "cosine_all_pairs": "gram"}  # baseline -> method name prefix
# Headline directions of the paired table; "video<->audio" is the mean of V→A and A→V.
PAIRED_DIRECTIONS = [
    ("video<->audio", "V↔A"),
    ("video->audio", "V→A"),
    ("audio->video", "A→V"),
    ("text->video", "T→V"),
    ("text->audio", "T→A"),
]


def direction_score(retrieval: dict, direction: str, metric: str = "class@1") -> float:
    """``metric`` of one retrieval direction; "video<->audio" averages both directions."""
    if direction == "video<->audio":
        return (retrieval["video->audio"][metric] + retrieval["audio->video"][metric]) / 2
    return retrieval[direction][metric]


def paired_differences(
    runs: list[dict], baseline: list[dict], split: str, direction: str
) -> list[float]:
    """class@1 differences (method - baseline) of the runs both have, matched by (fold, seed).

    A seed fixes the data order of every method, and a fold its test voices, so the paired
    difference removes what the two runs share; its interval is tighter than two separate ones.
    """
    base = {(r["fold"], r["seed"]): _split(r, split) for r in baseline}
    diffs = []
    for r in runs:
        mine, other = _split(r, split), base.get((r["fold"], r["seed"]))
        if mine and other:
            diffs.append(
                direction_score(mine["retrieval"], direction)
                - direction_score(other["retrieval"], direction)
            )
    return diffs


def _paired_table(
    by_method, methods, split: str, baseline: str = BASELINE, prefix: str = ""
) -> list[str]:
    """Markdown rows of the methods named ``prefix*`` minus ``baseline``, paired by (fold, seed)."""
    head = "| method | pairs | " + " | ".join(label for _, label in PAIRED_DIRECTIONS) + " |"
    lines = [head, "|" + "---|" * (len(PAIRED_DIRECTIONS) + 2)]
    for m in methods:
        if m == baseline or not m.startswith(prefix):
            continue
        diffs = [
            paired_differences(by_method[m], by_method[baseline], split, d)
            for d, _ in PAIRED_DIRECTIONS
        ]
        if not diffs[0]:
            continue
        cells = []
        for values in diffs:
            mean, half = mean_ci(values)
            # Marked where the interval excludes 0 (needs >= 2 pairs for an interval at all).
            mark = " **+**" if mean - half > 0 else " **−**" if mean + half < 0 else ""
            cells.append(f"{mean:+.3f} ± {half:.3f}{mark}" if len(values) > 1 else f"{mean:+.3f}")
        lines.append(f"| {m} | {len(diffs[0])} | " + " | ".join(cells) + " |")
    return lines


def load_runs(runs_dir: pathlib.Path) -> dict[str, list[dict]]:
    by_method: dict[str, list[dict]] = collections.defaultdict(list)
    for path in sorted(pathlib.Path(runs_dir).glob("*.json")):
        record = json.loads(path.read_text())
        by_method[record["method"]].append(record)
    return by_method


def _split(record: dict, split: str) -> dict | None:
    return record.get("splits", {}).get(split)


def _retrieval_table(by_method, methods, split: str, metric: str) -> list[str]:
    head = "| method | runs | " + " | ".join(label for _, label in DIRECTIONS) + " |"
    lines = [head, "|" + "---|" * (len(DIRECTIONS) + 2)]
    for m in methods:
        runs = [r for r in (_split(x, split) for x in by_method[m]) if r]
        if runs:
            cells = [_cell([r["retrieval"][d][metric] for r in runs]) for d, _ in DIRECTIONS]
            lines.append(f"| {m} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def tables(by_method: dict[str, list[dict]]) -> str:
    methods = [m for m in METHOD_ORDER if m in by_method] + sorted(
        m for m in by_method if m not in METHOD_ORDER
    )
    lines = []
    for split, title in SPLIT_TITLES.items():
        found = [_split(r, split) for m in methods for r in by_method[m]]
        records = {x["records"] for x in found if x}
        if not records:
            continue
        lines += [
            f"**class@1, {title}** (`{split}`, {sorted(records)} records per run; top-1 candidate "
            "shows the query's digit; chance 0.1), mean ± 95 % CI over runs",
            "",
            *_retrieval_table(by_method, methods, split, "class@1"),
            "",
        ]
    for baseline, prefix in PAIRED_BASELINES.items():
        if baseline not in by_method:
            continue
        for split in ("test", "test_seen"):
            table = _paired_table(by_method, methods, split, baseline, prefix)
            if len(table) > 2:
                lines += [
                    f"**Paired difference to {baseline}, {SPLIT_TITLES[split]}** (`{split}`): "
                    "class@1 of the method minus that of the baseline run with the same fold and "
                    "seed, mean ± 95 % CI over the pairs; **+** / **−**: the interval excludes 0",
                    "",
                    *table,
                    "",
                ]
    lines += [
        "**Sign and collapse diagnostics** (unseen-voice test split): fraction of positive pairs "
        "with a negative cosine (0.5 = random sign), class@1 scored by abs(cos) (sign-invariant), "
        "and the video tower's mean pairwise cosine (1 = collapsed)",
        "",
        "| method | neg. pos. t-v | neg. pos. t-a | neg. pos. v-a | abs-cos T→V | abs-cos T→A "
        "| abs-cos V→A | video mean cos |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        runs = [r for r in (_split(x, "test") for x in by_method[m]) if r]
        if not runs:
            continue
        diag = [r["diagnostics"] for r in runs]
        cells = [_cell([d[f"sign/{a}_{b}/neg_positive_fraction"] for d in diag]) for a, b in PAIRS]
        # The ranking module reports R@1 in percent; class-level R@1 is class@1 (ties pessimistic).
        cells += [_cell([d[f"abs_class/{a}2{b}/R@1"] / 100 for d in diag]) for a, b in PAIRS]
        cells.append(_cell([r["collapse"]["video"]["mean_cos"] for r in runs]))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "T→(V,A) is scored with each method's own tuple score (GRAM: volume; area: triangle area; "
        "Symile: multilinear product; cosine baselines: sum of the two cosines). "
        "V→A, A→V, T→V, T→A: cosine.",
    ]
    # Runs of one method may come from several sweep invocations: list what each method ran.
    lines += ["", "Runs per method (folds, seeds, and the training settings of its runs):", ""]
    for m in methods:
        runs = by_method[m]
        folds = sorted({r["fold"] for r in runs})
        seeds = sorted({r["seed"] for r in runs})
        shown = sorted(
            {
                json.dumps({k: r["settings"].get(k) for k in RUN_SETTINGS})
                for r in runs
                if "settings" in r
            }
        )
        lines.append(f"- {m}: folds {folds}, seeds {seeds}; " + "; ".join(f"`{x}`" for x in shown))
    return "\n".join(lines)


def figures(
    by_method: dict[str, list[dict]], out_dir: pathlib.Path, name: str = DEFAULT_NAME
) -> list[pathlib.Path]:
    """The positive-pair cosine histograms (the mechanism) and the held-out learning curves,
    written as ``<out_dir>/<name>_positive_cos.png`` and ``<name>_curves.png``."""
    # lazy: the Agg backend must be chosen before pyplot loads; only figure writing needs it.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHOD_ORDER if m in by_method]
    paths = []
    # One colour per method, the same in both figures.
    colors = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, (a, b) in zip(
        axes, (("text", "video"), ("text", "audio"), ("video", "audio")), strict=True
    ):
        for i, m in enumerate(methods):
            values = [
                v for r in by_method[m] for v in r.get("positive_cos", {}).get(f"{a}_{b}", [])
            ]
            if values:
                ax.hist(
                    values,
                    bins=40,
                    range=(-1, 1),
                    histtype="step",
                    density=True,
                    color=colors[i % 20],
                    label=m,
                )
        ax.set_title(f"cos({a}, {b}) of positive pairs")
        ax.set_xlabel("cosine")
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / f"{name}_positive_cos.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    keys = ("text->video/class@1", "text->audio/class@1", "video->audio/class@1")
    curve_splits = ("test", "test_seen")
    fig, grid = plt.subplots(len(curve_splits), 3, figsize=(13, 3.4 * len(curve_splits)))
    for row, split in zip(grid, curve_splits, strict=True):
        for ax, key in zip(row, keys, strict=True):
            for i, m in enumerate(methods):
                points = collections.defaultdict(list)
                for r in by_method[m]:
                    for p in r.get("curve", []):
                        if p["split"] == split:
                            points[p["step"]].append(p[key])
                if points:
                    steps = sorted(points)
                    means = [sum(points[s]) / len(points[s]) for s in steps]
                    ax.plot(steps, means, marker="o", ms=3, color=colors[i % 20], label=m)
            ax.axhline(0.1, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{key.split('/')[0]} class@1 ({SPLIT_TITLES[split].split(', ')[1]})")
            ax.set_xlabel("step")
    grid[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / f"{name}_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


TEMPLATE = f"""# Results

## TriDigits miniature reproduction

{START}
{END}
"""


def write_results(runs_dir: pathlib.Path, results: pathlib.Path, name: str = DEFAULT_NAME):
    """Rewrite the generated block ``name`` of ``results`` from the run JSON files in ``runs_dir``
    (each run records its own settings; the table lists them per method), and its figures."""
    by_method = load_runs(runs_dir)
    if not by_method:
        raise FileNotFoundError(f"no run JSON files in {runs_dir}")
    results = pathlib.Path(results)
    text = results.read_text(encoding="utf-8") if results.exists() else TEMPLATE
    body = tables(by_method)
    figures(by_method, results.parent / "figures", name)
    results.write_text(_replace_block(text, name, body), encoding="utf-8")
    return results


# Generated fine-tuning blocks of docs/results.md: marker name -> committed run files.
FINETUNE_BLOCKS = {
    name: pathlib.Path(__file__).resolve().parent / "runs" / name
    for name in ("finetune", "finetune_captions")
}


def _replace_block(text: str, name: str, body: str) -> str:
    start, end = markers(name)
    if start not in text or end not in text:
        text = text.rstrip() + "\n\n" + start + "\n" + end + "\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_finetune(
    runs_dir: pathlib.Path, results: pathlib.Path, block: str = finetune_table.NAME
) -> pathlib.Path:
    """Rewrite the ``block`` fine-tuning block of ``results`` from the run files in ``runs_dir``."""
    results = pathlib.Path(results)
    text = results.read_text(encoding="utf-8") if results.exists() else TEMPLATE
    body = finetune_table.table(finetune_table.load_runs(runs_dir))
    results.write_text(_replace_block(text, block, body), encoding="utf-8")
    return results


def check_finetune(
    runs_dir: pathlib.Path,
    results: pathlib.Path,
    block: str = finetune_table.NAME,
    out=sys.stdout,
) -> int:
    """0 when the ``block`` block of ``results`` is what ``runs_dir`` generates; else 1 and a
    unified diff on ``out``."""
    results = pathlib.Path(results)
    text = results.read_text(encoding="utf-8")
    start, end = markers(block)
    if start not in text or end not in text:
        print(f"{results}: no {start} ... {end} block to check", file=out)
        return 1
    if not any(pathlib.Path(runs_dir).glob("*.json")):
        print(f"{runs_dir}: no run files (*.json) for the {block} block", file=out)
        return 1
    body = finetune_table.table(finetune_table.load_runs(runs_dir))
    want = _replace_block(text, block, body)
    if want == text:
        print(f"{results}: the {block} block matches {runs_dir}", file=out)
        return 0
    diff = difflib.unified_diff(
        text.splitlines(), want.splitlines(), str(results), f"from {runs_dir}", lineterm=""
    )
    print("\n".join(diff), file=out)
    return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs", type=pathlib.Path, default=pathlib.Path("workdirs/tridigits_sweep/runs")
    )
    here = pathlib.Path(__file__).resolve().parents[2]
    p.add_argument("--results", type=pathlib.Path, default=here / "docs" / "results.md")
    p.add_argument(
        "--name", default=DEFAULT_NAME, help="which generated block (markers, figure names)"
    )
    p.add_argument(
        "--finetune-runs",
        type=pathlib.Path,
        default=None,
        help="write (or with --check: check only) a fine-tuning block from these run files "
        "(--check default: every block of FINETUNE_BLOCKS from its committed run files)",
    )
    p.add_argument(
        "--finetune-block",
        default=finetune_table.NAME,
        choices=sorted(FINETUNE_BLOCKS),
        help="the block --finetune-runs writes or checks",
    )
    p.add_argument(
        "--check",
        type=pathlib.Path,
        default=None,
        metavar="RESULTS",
        help="exit 1 when a generated fine-tuning block of RESULTS differs from its run files",
    )
    args = p.parse_args(argv)
    if args.check is not None:
        if args.finetune_runs is not None:
            return check_finetune(args.finetune_runs, args.check, args.finetune_block)
        codes = [check_finetune(d, args.check, name) for name, d in FINETUNE_BLOCKS.items()]
        return max(codes)
    if args.finetune_runs is not None:
        print(write_finetune(args.finetune_runs, args.results, args.finetune_block))
        return 0
    print(write_results(args.runs, args.results, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
