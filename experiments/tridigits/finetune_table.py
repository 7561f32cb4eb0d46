"""The fine-tuning table of docs/results.md, generated from committed run files (finetune.py).

Every number is a paired comparison over (fold, seed) units: stage 2's arms start from the same
stage-1 parameters and read the same data, so arm minus reference, unit by unit, removes what they
share. Per comparison: the mean difference, its 95 % t interval over the n units, and the
two-sided paired t-test p-value; the primary comparisons (``PRIMARY``) also get Holm's
step-down adjustment over the primaries (family-wise error 0.05).

Primary: the volume arm scored by the volume against the cosine-anchored arm scored by the summed
cosine (each objective with its own scoring, as the paper compares GRAM with VAST), class@1 over
distinct queries, on unseen voices, for (video, audio) -> text and text -> (video, audio).
"""

from __future__ import annotations

import collections
import json
import math
import pathlib

from scipy import stats

from gram_jax.evaluators.distinct import PRIMARY

NAME = "finetune"
ARM_ORDER = ("none", "cosine_anchor", "volume", "cosine_all_pairs", "volume_all_pairs")
REFERENCE = "cosine_anchor"
# (direction, arm, its scoring): the primaries compare ("volume", "volume") with the reference.
PRIMARY_TESTS = tuple((d, "volume", "volume", REFERENCE, "cosine") for d in PRIMARY)
SECONDARY = (
    "text->video",
    "text->audio",
    "video->audio",
    "audio->video",
)


def load_runs(runs_dir: pathlib.Path) -> dict[str, dict[tuple[int, int], dict]]:
    """{arm: {(fold, seed): run record}} of the ``*.json`` run files in ``runs_dir``."""
    by_arm: dict = collections.defaultdict(dict)
    for path in sorted(pathlib.Path(runs_dir).glob("*.json")):
        record = json.loads(path.read_text())
        for key in ("arm", "fold", "seed", "test"):
            if key not in record:
                raise ValueError(f"{path}: run file lacks the key {key!r} (finetune.py writes it)")
        by_arm[record["arm"]][(record["fold"], record["seed"])] = record
    return by_arm


def paired(differences: list[float]) -> dict[str, float]:
    """{'n', 'mean', 'half' (95 % t half-width), 'p' (two-sided paired t-test)}."""
    n = len(differences)
    mean = sum(differences) / n
    mean = 0.0 if abs(mean) < 1e-12 else mean  # float residue of equal values prints as -0.000
    if n < 2:
        return {"n": n, "mean": mean, "half": math.nan, "p": math.nan}
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)
    return {"n": n, "mean": mean, "half": float(half), "p": float(p)}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order; a nan (no test: an arm missing,
    one unit) stays nan and is not counted in the family."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def _value(record: dict, key: str, metric: str = "class@1") -> float:
    value = record["test"][key]
    return value[metric] if isinstance(value, dict) else value


def _differences(by_arm, arm, key, ref, ref_key, metric="class@1") -> list[float]:
    mine, base = by_arm.get(arm, {}), by_arm.get(ref, {})
    units = sorted(set(mine) & set(base))
    return [_value(mine[u], key, metric) - _value(base[u], ref_key, metric) for u in units]


def _cell(result: dict, adjusted: float | None = None) -> str:
    if result["n"] < 2:
        return f"{result['mean']:+.3f} (n={result['n']})"
    p = f"p={result['p']:.3f}" + ("" if adjusted is None else f", Holm {adjusted:.3f}")
    return f"{result['mean']:+.3f} ± {result['half']:.3f} ({p})"


def _mean(by_arm, arm, key, metric="class@1") -> str:
    values = [_value(r, key, metric) for r in by_arm[arm].values()]
    return f"{sum(values) / len(values):.3f}"


def query_counts(by_arm: dict) -> str:
    """'direction n' (or 'direction lo-hi' when units differ) for every direction of the run
    files' ``queries``: how many distinct queries one unit's class@1 is counted over."""
    counts = collections.defaultdict(set)
    for runs in by_arm.values():
        for record in runs.values():
            for direction, n in record.get("queries", {}).items():
                counts[direction].add(n)
    return ", ".join(
        f"{d} {min(n)}" if len(n) == 1 else f"{d} {min(n)}-{max(n)}"
        for d, n in sorted(counts.items())
    )


def table(by_arm: dict) -> str:
    """The markdown block (without markers) of the fine-tuning comparison."""
    if not by_arm:
        return (
            "No fine-tuning run files are committed yet: run `python -m "
            "experiments.tridigits.finetune` (>= 12 paired units) and commit its `runs/*.json`."
        )
    arms = [a for a in ARM_ORDER if a in by_arm] + sorted(a for a in by_arm if a not in ARM_ORDER)
    units = sorted({u for a in arms for u in by_arm[a]})
    lines = [
        f"Units: {len(units)} (fold, seed) pairs {units}; test split: held-out images, unseen "
        "voices; budget chosen on the validation voices. Distinct queries per direction and unit "
        "(the range over units): " + query_counts(by_arm) + ".",
        "",
        "**Primary** (class@1 over distinct queries; volume arm scored by the volume minus the "
        "cosine-anchored arm scored by summed cosine; paired over units, 95 % t interval, Holm "
        "over the primaries)",
        "",
        "| direction | volume − cosine_anchor |",
        "|---|---|",
    ]
    results = [
        paired(_differences(by_arm, arm, f"{d}/{s}", ref, f"{d}/{rs}"))
        if arm in by_arm and ref in by_arm
        else None
        for d, arm, s, ref, rs in PRIMARY_TESTS
    ]
    adjusted = holm([r["p"] if r else math.nan for r in results])
    for (d, *_), r, adj in zip(PRIMARY_TESTS, results, adjusted, strict=True):
        lines.append(f"| {d} | {_cell(r, adj) if r else 'arm missing'} |")
    lines += [
        "",
        "**Every arm, both scorings** (mean over units; class@1 / text@1)",
        "",
        "| arm | " + " | ".join(f"{d} {s}" for d in PRIMARY for s in ("volume", "cosine")) + " |",
        "|---|" + "---|" * 4,
    ]
    for arm in arms:
        cells = [
            f"{_mean(by_arm, arm, f'{d}/{s}')} / {_mean(by_arm, arm, f'{d}/{s}', 'text@1')}"
            for d in PRIMARY
            for s in ("volume", "cosine")
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Secondary, paired difference to {REFERENCE}** (class@1 of the pairwise directions; "
        "audio gain = T→(V,A) minus T→V under the arm's own scoring; share of positive tuples "
        "with cos(v,a) > cos(t,v)·cos(t,a)); no multiplicity correction",
        "",
        "| arm | " + " | ".join(SECONDARY) + " | audio gain | positive share |",
        "|---|" + "---|" * (len(SECONDARY) + 2),
    ]
    own = {"volume": "volume", "volume_all_pairs": "volume"}
    for arm in arms:
        if arm == REFERENCE or REFERENCE not in by_arm:
            continue
        cells = [_cell(paired(_differences(by_arm, arm, d, REFERENCE, d))) for d in SECONDARY]
        gain = f"audio_gain/{own.get(arm, 'cosine')}"
        cells.append(_cell(paired(_differences(by_arm, arm, gain, REFERENCE, "audio_gain/cosine"))))
        share = "positive_share"
        cells.append(_cell(paired(_differences(by_arm, arm, share, REFERENCE, share))))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    # Where the runs were written is not a setting of them.
    settings = sorted(
        {
            json.dumps({k: v for k, v in r["settings"].items() if k != "out"}, sort_keys=True)
            for a in arms
            for r in by_arm[a].values()
            if "settings" in r
        }
    )
    lines += ["", "Settings of the runs: " + "; ".join(f"`{s}`" for s in settings)]
    return "\n".join(lines)
