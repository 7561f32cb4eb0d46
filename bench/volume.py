"""Benchmark: volume InfoNCE forward+backward, ours (Schur form) vs the naive [B, B, k, k] det.

Prints one JSON line per (implementation, B, k) with the median step time, the peak memory and the
error of the volume against a float64 NumPy oracle on near-aligned tuples. Results are written up in
docs/benchmarks.md (section "Volume").

    python bench/volume.py                                  # defaults: B 1024 4096 16384, k 3 4 5
    python bench/volume.py --batch 1024 --k 3 --reps 5      # one configuration

The loss is a plain symmetric volume InfoNCE (both softmax directions over -V / tau, label
smoothing 0.1) written here so the benchmark does not depend on gram_jax.losses.
Naive = the released code's formulation: stack the [B, B, k, k] Gram tensor, batched LU
determinant, sqrt(|det|) (in float32; the release additionally runs it under fp16 autocast).
Peak memory: XLA's compiled memory analysis (arguments + outputs + temporaries, per device) of the
jitted step; where the backend reports it (GPU) also ``memory_stats()['peak_bytes_in_use']``, which
is a running maximum over the process (exact only for the first or largest configuration).
--shard splits the batch axis over every device (e.g. B = 65536 on a GPU mesh).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gram_jax.volume import pairwise_volume

TEMPERATURE = 0.07
LABEL_SMOOTHING = 0.1


def naive_pairwise_volume(anchor: jax.Array, others: jax.Array) -> jax.Array:
    """[B1, D], [k-1, B2, D] -> [B1, B2] through an explicit [B1, B2, k, k] Gram tensor.

    Built like the released volume_computation: anchor-vs-data entries from [B1, B2] matmuls,
    data-vs-data entries from per-tuple row dots broadcast over B1, then batched det.
    """
    b1, b2 = anchor.shape[0], others.shape[1]
    vecs = [anchor] + list(others)
    rows = []
    for p, vp in enumerate(vecs):
        row = []
        for q, vq in enumerate(vecs):
            if p == 0 and q == 0:
                entry = jnp.broadcast_to(jnp.sum(vp * vp, -1)[:, None], (b1, b2))
            elif p == 0 or q == 0:
                entry = anchor @ (vq if p == 0 else vp).T
            else:
                entry = jnp.broadcast_to(jnp.sum(vp * vq, -1)[None, :], (b1, b2))
            row.append(entry)
        rows.append(jnp.stack(row, -1))
    gram = jnp.stack(rows, -2)  # [B1, B2, k, k]
    return jnp.sqrt(jnp.abs(jnp.linalg.det(gram)))


def ours_pairwise_volume(anchor: jax.Array, others: jax.Array) -> jax.Array:
    return pairwise_volume(anchor, others)


IMPLEMENTATIONS = {"ours": ours_pairwise_volume, "naive": naive_pairwise_volume}


def volume_infonce(volume_fn, anchor: jax.Array, others: jax.Array) -> jax.Array:
    """Symmetric InfoNCE over logits -Vol / tau with label smoothing (scalar float32)."""
    logits = -volume_fn(anchor, others) / TEMPERATURE  # [B, B]
    n = logits.shape[0]
    targets = optax.smooth_labels(jax.nn.one_hot(jnp.arange(n), n), LABEL_SMOOTHING)
    a2d = optax.softmax_cross_entropy(logits, targets).mean()
    d2a = optax.softmax_cross_entropy(logits.T, targets).mean()
    return 0.5 * (a2d + d2a)


def make_inputs(rng: np.random.Generator, batch: int, k: int, dim: int, noise: float):
    """k near-aligned unit vectors per row: normalise(base_j + noise * N(0, I)), base ~ N(0, I)."""
    base = rng.standard_normal((batch, dim), dtype=np.float32)
    vecs = base[None] + noise * rng.standard_normal((k, batch, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True)
    return vecs[0], vecs[1:]


def oracle_matched(anchor: np.ndarray, others: np.ndarray) -> np.ndarray:
    """float64 Vol of the matched tuples (the near-aligned positives): [B]."""
    a = np.concatenate([anchor[None], others]).transpose(1, 0, 2).astype(np.float64)
    return np.sqrt(np.maximum(np.linalg.det(a @ a.transpose(0, 2, 1)), 0.0))


def volume_error(impl: str, k: int, dim: int, n: int, rng: np.random.Generator) -> dict:
    """Relative error on the diagonal (near-aligned positives, vol ~4e-3 at k=3) of n x n."""
    anchor, others = make_inputs(rng, n, k, dim, noise=0.05)
    want = oracle_matched(anchor, others)
    got = np.diag(np.asarray(jax.jit(IMPLEMENTATIONS[impl])(anchor, others), np.float64))
    rel = np.abs(got - want) / want
    return {
        "err_n": n,
        "pos_vol_median": float(np.median(want)),
        "rel_err_median": float(np.median(rel)),
        "rel_err_max": float(rel.max()),
    }


def compiled_peak(compiled) -> int | None:
    """Arguments + outputs + temporaries of one compiled step (per device), from XLA's analysis."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def place(anchor: np.ndarray, others: np.ndarray, shard: bool):
    """Put the inputs on device(s); with shard, split the batch axis over every device (GSPMD)."""
    if not shard:
        return jax.device_put(anchor), jax.device_put(others)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    return (
        jax.device_put(anchor, NamedSharding(mesh, P("data", None))),
        jax.device_put(others, NamedSharding(mesh, P(None, "data", None))),
    )


def bench_one(
    impl: str,
    batch: int,
    k: int,
    dim: int,
    reps: int,
    max_run_bytes: float,
    rng: np.random.Generator,
    shard: bool = False,
) -> dict:
    device = jax.devices()[0]
    record = {
        "bench": "volume_loss_fwd_bwd",
        "impl": impl,
        "B": batch,
        "k": k,
        "D": dim,
        "dtype": "float32",
        "device": device.device_kind,
        "platform": device.platform,
        "devices": len(jax.devices()) if shard else 1,
        "host": platform.node(),
        "jax": jax.__version__,
    }
    anchor, others = place(*make_inputs(rng, batch, k, dim, noise=0.05), shard)
    step = jax.jit(
        jax.value_and_grad(lambda a, o: volume_infonce(IMPLEMENTATIONS[impl], a, o), argnums=(0, 1))
    )
    t0 = time.perf_counter()
    compiled = step.lower(anchor, others).compile()
    record["compile_s"] = round(time.perf_counter() - t0, 2)
    record["peak_bytes"] = compiled_peak(compiled)
    record["memory_source"] = "compiled.memory_analysis (per device)"
    if record["peak_bytes"] is not None and record["peak_bytes"] > max_run_bytes:
        record["skipped"] = f"compiled peak {record['peak_bytes'] / 2**30:.1f} GiB > limit"
        return record
    jax.block_until_ready(compiled(anchor, others))  # warm-up
    times, cpu_times = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, grads = compiled(anchor, others)
        jax.block_until_ready((loss, grads))
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    record["median_ms"] = round(1e3 * statistics.median(times), 3)
    # CPU seconds of this process (all threads): on a CPU shared with other jobs this moves much
    # less than wall time, so it is the fairer ours-vs-naive comparison there.
    record["median_cpu_ms"] = round(1e3 * statistics.median(cpu_times), 3)
    record["reps"] = reps
    record["loss"] = float(loss)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        # Monotone over the process: exact for this configuration only when it runs alone.
        record["process_peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--k", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--impl", nargs="+", default=["ours", "naive"], choices=IMPLEMENTATIONS)
    parser.add_argument(
        "--max-run-gib",
        type=float,
        default=8.0,
        help="skip timing when the compiled peak (per device) exceeds this",
    )
    parser.add_argument(
        "--error-n",
        type=int,
        default=256,
        help="size of the near-aligned problem used for the error column",
    )
    parser.add_argument(
        "--shard", action="store_true", help="shard the batch axis over all devices (a mesh)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for k in args.k:
        for impl in args.impl:
            err = volume_error(impl, k, args.dim, args.error_n, rng)
            for batch in args.batch:
                record = bench_one(
                    impl, batch, k, args.dim, args.reps, args.max_run_gib * 2**30, rng, args.shard
                )
                print(json.dumps({**record, **err}), flush=True)


if __name__ == "__main__":
    main()
