"""Benchmark: forward and forward+backward of the base towers (ViT-B/16, BEATs-base, BERT-base).

Prints one JSON line per (tower, mode): median wall time over ``--reps`` runs of the jitted
function, compile time, FLOPs from XLA's cost analysis (of the layer-unrolled program: XLA counts
a scan body once), the achieved TFLOP/s (FLOPs / median time), and the peak memory:
``device.memory_stats()['peak_bytes_in_use']`` where the backend reports it (GPU), else XLA's
compiled memory analysis (arguments + outputs + temporaries - aliased). Results are written up in
docs/benchmarks.md (section "Model").

    python bench/model.py                                   # CPU defaults, float32
    python bench/model.py --dtype bfloat16 --vit-batch 32 --beats-batch 32 --bert-batch 128  # GPU

Inputs are random (timing does not depend on values): frames [B, F, 224, 224, 3], filterbanks
[B, 1, 1024, 64] (GRAM feeds BEATs 64 mel bins), token ids [B, 40] (GRAM's caption length).
On a shared CPU, ``cpu_s_per_call`` (process CPU seconds per call, all threads) is less sensitive
to other load than the wall time. Forward = eval mode (no dropout); forward+backward = gradient
of sum(pooled**2) w.r.t. all parameters in train mode (dropout / drop-path active, as in a
training step).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gram_jax.models.audio import AudioTransformer, audio_config
from gram_jax.models.bert import BertEncoder, bert_config
from gram_jax.models.vit import VisionTransformer, vit_config


def _towers(args, scan: bool = True) -> dict[str, tuple[Callable[[], nnx.Module], Any, Callable]]:
    """name -> (make_model, input batch, pooled_fn(model, batch, train) -> float32[B, W])."""
    dtype = jnp.dtype(args.dtype)
    common = dict(dtype=dtype, remat_policy=args.remat, scan_layers=scan)
    key = jax.random.key(0)
    out = {}
    if "vit" in args.towers:
        cfg = vit_config("base", drop_path_rate=0.1, **common)
        frames = jax.random.normal(key, (args.vit_batch, args.frames, 224, 224, 3), jnp.float32)
        out["vit_b16"] = (
            lambda cfg=cfg: VisionTransformer(cfg, rngs=nnx.Rngs(params=0, dropout=1)),
            frames,
            lambda m, x, train: m(x, train=train).pooled,
        )
    if "beats" in args.towers:
        cfg = audio_config("base", **common)
        fbank = jax.random.normal(key, (args.beats_batch, 1, 1024, 64), jnp.float32)
        out["beats_base"] = (
            lambda cfg=cfg: AudioTransformer(cfg, rngs=nnx.Rngs(params=0, dropout=1)),
            fbank,
            lambda m, x, train: m(x, train=train).pooled,
        )
    if "bert" in args.towers:
        cfg = bert_config("base", **common)
        ids = jax.random.randint(key, (args.bert_batch, 40), 0, cfg.vocab_size, jnp.int32)

        def bert_pooled(m, x, train):
            return m(x, jnp.ones_like(x), train=train)[:, 0].astype(jnp.float32)

        out["bert_base"] = (
            lambda cfg=cfg: BertEncoder(cfg, rngs=nnx.Rngs(params=0, dropout=1)),
            ids,
            bert_pooled,
        )
    return out


def _cost(stage) -> float:
    """FLOPs of a jax Lowered/Compiled stage (XLA cost analysis)."""
    analysis = stage.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax returns one dict per computation
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def _peak_bytes(compiled) -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_peak"
    mem = compiled.memory_analysis()
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    return int(total), "compiled_memory_analysis"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time(fn, args, reps: int) -> tuple[list[float], float]:
    """Wall times of ``reps`` calls and the process CPU seconds per call (all threads)."""
    times = []
    cpu_start = _cpu_seconds()
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times, (_cpu_seconds() - cpu_start) / reps


def _step_fns(make_model, pooled_fn):
    """(graphdef, {mode: fn(params, rest, batch)}) for the forward and forward+backward passes."""
    graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]

    def forward(p, r, x):
        return pooled_fn(nnx.merge(graphdef, p, r, copy=True), x, False)

    def loss(p, r, x):
        return jnp.sum(pooled_fn(nnx.merge(graphdef, p, r, copy=True), x, True) ** 2)

    return {"fwd": forward, "fwd_bwd": jax.grad(loss)}


def run_tower(name: str, make_model, make_unrolled, batch, pooled_fn, args) -> None:
    # Initialise under jit (fast: no eager per-op dispatch).
    params, rest = jax.jit(lambda: nnx.split(make_model(), nnx.Param, ...)[1:])()
    n_params = sum(x.size for x in jax.tree.leaves(params))
    fns = _step_fns(make_model, pooled_fn)
    # XLA counts a while-loop body once, so FLOPs come from the unrolled program (same math),
    # analysed after lowering (no second compile).
    unrolled = _step_fns(make_unrolled, pooled_fn)
    for mode, fn in fns.items():
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(params, rest, batch).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(params, rest, batch))  # warm-up
        times, cpu_s = _time(compiled, (params, rest, batch), args.reps)
        median = statistics.median(times)
        flops = _cost(jax.jit(unrolled[mode]).lower(params, rest, batch))
        peak, peak_kind = _peak_bytes(compiled)
        print(
            json.dumps(
                {
                    "tower": name,
                    "mode": mode,
                    "batch": list(batch.shape),
                    "dtype": args.dtype,
                    "remat": args.remat,
                    "params_M": round(n_params / 1e6, 2),
                    "compile_s": round(compile_s, 1),
                    "time_ms_median": round(median * 1e3, 1),
                    "time_ms_all": [round(t * 1e3, 1) for t in times],
                    "cpu_s_per_call": round(cpu_s, 2),
                    "gflops": round(flops / 1e9, 1),
                    "tflops_per_s": round(flops / median / 1e12, 3),
                    "peak_mb": round(peak / 2**20, 1),
                    "peak_kind": peak_kind,
                    "device": jax.devices()[0].device_kind,
                    "backend": jax.default_backend(),
                    "jax": jax.__version__,
                    "host": platform.node(),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", default="vit,beats,bert")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--remat", default="none", help="a key of layers.REMAT_POLICIES")
    parser.add_argument("--vit-batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=2, help="frames per video (vit)")
    parser.add_argument("--beats-batch", type=int, default=4)
    parser.add_argument("--bert-batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    args.towers = args.towers.split(",")
    unrolled = _towers(args, scan=False)
    for name, (make_model, batch, pooled_fn) in _towers(args).items():
        run_tower(name, make_model, unrolled[name][0], batch, pooled_fn, args)


if __name__ == "__main__":
    main()
