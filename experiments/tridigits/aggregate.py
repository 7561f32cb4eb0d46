"""Aggregate the TriDigits sweep: mean and 95 % confidence interval per method and metric.

``python -m experiments.tridigits.aggregate --runs workdirs/tridigits_sweep/runs`` rewrites the
generated part of docs/results.md (between the ``tridigits-table`` markers); text outside the
markers (the discussion) is kept.

The interval is mean +- t(0.975, n-1) * sd / sqrt(n) over the n (fold, seed) runs of a method.
Runs of different folds test different voices, so the interval covers voice and seed variation.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib

START, END = "<!-- tridigits-table:start -->", "<!-- tridigits-table:end -->"
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
METHOD_ORDER = ["gram", "cosine_anchor", "cosine_all_pairs", "symile", "area"]


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


def load_runs(runs_dir: pathlib.Path) -> dict[str, list[dict]]:
    by_method: dict[str, list[dict]] = collections.defaultdict(list)
    for path in sorted(pathlib.Path(runs_dir).glob("*.json")):
        record = json.loads(path.read_text())
        by_method[record["method"]].append(record)
    return by_method


def tables(by_method: dict[str, list[dict]]) -> str:
    methods = [m for m in METHOD_ORDER if m in by_method] + sorted(
        m for m in by_method if m not in METHOD_ORDER
    )
    lines = []
    for metric, what in (
        ("class@1", "class@1 (top-1 candidate shows the query's digit; chance 0.1)"),
        ("R@1", "instance R@1 (the query's own record ranked first; chance ≈ 1/45)"),
    ):
        lines += [f"**{what}**, mean ± 95 % CI over runs", ""]
        head = "| method | runs | " + " | ".join(label for _, label in DIRECTIONS) + " |"
        lines += [head, "|" + "---|" * (len(DIRECTIONS) + 2)]
        for m in methods:
            runs = by_method[m]
            cells = [_cell([r["retrieval"][d][metric] for r in runs]) for d, _ in DIRECTIONS]
            lines.append(f"| {m} | {len(runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**Collapse per modality** (mean off-diagonal cosine of the test embeddings, 1 = one "
        "constant vector; total variance of the unit vectors, 0 = collapsed)",
        "",
        "| method | text mean cos | video mean cos | audio mean cos | text var | video var "
        "| audio var |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        runs = by_method[m]
        cos = [
            _cell([r["collapse"][x]["mean_cos"] for r in runs]) for x in ("text", "video", "audio")
        ]
        var = [
            _cell([r["collapse"][x]["variance"] for r in runs]) for x in ("text", "video", "audio")
        ]
        lines.append(f"| {m} | " + " | ".join(cos + var) + " |")
    lines += [
        "",
        "T→(V,A) is scored with each method's own tuple score (GRAM: volume; area: triangle area; "
        "Symile: multilinear product; cosine baselines: sum of the two cosines). The same "
        "embeddings scored by the sum of cosines instead:",
        "",
        "| method | T→(V,A) class@1, cosine-sum scoring | T→(V,A) R@1, cosine-sum scoring |",
        "|---|---|---|",
    ]
    for m in methods:
        runs = by_method[m]
        lines.append(
            f"| {m} | {_cell([r['retrieval_cosine_tuple']['class@1'] for r in runs])} | "
            f"{_cell([r['retrieval_cosine_tuple']['R@1'] for r in runs])} |"
        )
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


TEMPLATE = f"""# Results

## TriDigits miniature reproduction

{START}
{END}
"""


def write_results(runs_dir: pathlib.Path, results: pathlib.Path):
    """Rewrite the generated table of ``results`` from the run JSON files in ``runs_dir``
    (each run records its own settings; the table lists them per method)."""
    by_method = load_runs(runs_dir)
    if not by_method:
        raise FileNotFoundError(f"no run JSON files in {runs_dir}")
    results = pathlib.Path(results)
    text = results.read_text(encoding="utf-8") if results.exists() else TEMPLATE
    if START not in text or END not in text:
        text = text.rstrip() + "\n\n" + START + "\n" + END + "\n"
    body = tables(by_method)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    results.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs", type=pathlib.Path, default=pathlib.Path("workdirs/tridigits_sweep/runs")
    )
    here = pathlib.Path(__file__).resolve().parents[2]
    p.add_argument("--results", type=pathlib.Path, default=here / "docs" / "results.md")
    args = p.parse_args(argv)
    print(write_results(args.runs, args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
