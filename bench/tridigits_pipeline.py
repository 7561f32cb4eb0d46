"""The quickstart's input pipeline on TriDigits: numpy BLAS left multi-threaded vs limited to one.

Every TriDigits batch decodes 32 WAV clips at their own rates (8-48 kHz) and resamples them to
16 kHz with one small float64 matmul per clip (`data_pipelines.media.audio.sinc_resample`), from
``read_threads`` threads at once. With BLAS multi-threaded (``blas_threads=None``, numpy's
default) each of those matmuls also wakes BLAS's own threads, which on a 2-core host contend with
the decoding threads and with the trainer; ``blas_threads=1`` (the data config's default) keeps
BLAS to the calling thread. The setting is process-wide, so each arm runs in a fresh
subprocess, alternating, ``--repeats`` times; CPU seconds (all threads) and wall seconds per
batch, medians over repeats. JSON lines on stdout, the last one the summary.

    python bench/tridigits_pipeline.py [--batches 40] [--repeats 3]

Needs the default TriDigits build (built on first use, as the quickstart does).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(blas_threads: int | None, batches: int) -> dict:
    """Per-batch CPU and wall seconds of the quickstart's training iterator, after 5 warm-up
    batches (opening files, first tokenizer use)."""
    from data_pipelines.pipeline import make_train_iterator
    from experiments import quickstart

    config = quickstart.get_config().data
    config.blas_threads = blas_threads
    iterator = make_train_iterator(config, process_index=0, process_count=1)
    for _ in range(5):
        next(iterator)

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    wall, cpu0 = time.perf_counter(), cpu()
    for _ in range(batches):
        next(iterator)
    return {
        "blas_threads": blas_threads,
        "batches": batches,
        "batch_size": config.batch_size,
        "read_threads": config.read_threads,
        "cpu_s_per_batch": (cpu() - cpu0) / batches,
        "wall_s_per_batch": (time.perf_counter() - wall) / batches,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arm", choices=("none", "1"), help=argparse.SUPPRESS)  # one subprocess
    args = p.parse_args(argv)
    if args.arm is not None:
        print(json.dumps(measure(None if args.arm == "none" else 1, args.batches)))
        return 0
    results: dict[str, list[dict]] = {"none": [], "1": []}
    for _ in range(args.repeats):
        for arm in results:
            cmd = [sys.executable, __file__, "--arm", arm, "--batches", str(args.batches)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results[arm].append(result)
    summary = {
        f"blas_{arm}_{key}_median": statistics.median(r[key] for r in runs)
        for arm, runs in results.items()
        for key in ("cpu_s_per_batch", "wall_s_per_batch")
    }
    summary["cpu_ratio_none_over_1"] = (
        summary["blas_none_cpu_s_per_batch_median"] / summary["blas_1_cpu_s_per_batch_median"]
    )
    print(json.dumps({"summary": summary, "repeats": args.repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
