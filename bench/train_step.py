"""Train-step benchmark: step time, achieved TFLOP/s and model FLOPs utilisation (MFU).

Runs the real jitted update step of `gram_jax.train.Trainer` (volume loss + 0.1 x matching loss,
AdamW, donated state) on the base configuration of experiments/base_config.py (ViT-B/16 frames,
BEATs-base, BERT-base, bf16 matmuls) with a synthetic batch of the batch contract's shapes and
dtypes (timing does not depend on pixel values). FLOPs per step come from XLA's cost analysis of
the compiled step (forward + backward + optimizer, as compiled; rematerialised work counts too);
layers are unrolled by default because the analysis counts a scanned (while-loop) body once.
MFU = achieved FLOP/s / the device's peak dense FLOP/s (``--peak-tflops``; defaults: H100 SXM
bf16 989, H200 989; CPU: no MFU).

Prints one JSON line per configuration. Examples:
  python bench/train_step.py --batch 2 --frames 2 --steps 3            # CPU, small
  python bench/train_step.py --batch 128 --frames 8 --remat dots        # one H100
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from experiments import base_config
from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.models.gram import model_config
from gram_jax.train import Trainer

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _flops(lowered_or_compiled) -> float:
    """XLA's FLOP count of a lowered or compiled step (per device for an SPMD program)."""
    analysis = lowered_or_compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per partition
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))


def synthetic_batch(config, batch: int):
    """numpy batch with the contract's keys for config.data (values random, shapes exact)."""
    rng = np.random.default_rng(0)
    data = config.data
    out = {}
    for m in data.modalities:
        if m in ("text", "subtitle"):
            length = data.text_max_len[m]
            out[f"{m}_ids"] = rng.integers(1000, 30000, (batch, length), dtype=np.int32)
            out[f"{m}_mask"] = np.ones((batch, length), np.int32)
        elif m == "video":
            shape = (batch, data.num_frames, data.image_size, data.image_size, 3)
            out[m] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif m == "audio":
            shape = (batch, data.audio.num_clips, data.audio.target_length, data.audio.mel_bins)
            out[m] = rng.standard_normal(shape, dtype=np.float32)
        out[f"present_{m}"] = np.ones(batch, bool)
    out["index"] = np.arange(batch, dtype=np.int32)
    out["valid"] = np.ones(batch, bool)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="global batch")
    parser.add_argument("--frames", type=int, default=2, help="video frames per sample")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--remat", default="none", help="model remat_policy")
    parser.add_argument("--size", default="base", help="model size: tiny | base | paper")
    parser.add_argument(
        "--scan-layers",
        action="store_true",
        help="scan over layers (XLA's cost analysis then counts one layer per tower: the FLOP "
        "and MFU columns are only right unrolled, the default here)",
    )
    parser.add_argument("--matching-weight", type=float, default=0.1)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="0 = by device kind")
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="lower the step on abstract shapes and report XLA's FLOP count without compiling "
        "or allocating the model (for configurations that do not fit this machine)",
    )
    args = parser.parse_args()

    config = base_config.get_config()
    config.model = model_config(
        args.size, dtype=args.dtype, remat_policy=args.remat, scan_layers=args.scan_layers
    )
    config.data.unlock()
    config.data.batch_size = args.batch
    config.data.num_frames = args.frames
    config.loss.matching_weight = args.matching_weight
    config.mesh.update(dict(data=-1, fsdp=1, model=1))

    config = prepare(config, count_data=False)  # the same preparation as gram-train
    t0 = time.perf_counter()
    trainer = Trainer(config)
    if args.flops_only:
        local = synthetic_batch(config, args.batch)
        abstract_batch = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=trainer.batch_sharding)
            for k, v in local.items()
        }
        lowered = trainer.train_step.lower(trainer.abstract_state, abstract_batch)
        params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainer.abstract_params))
        print(
            json.dumps(
                {
                    "bench": "train_step_flops",
                    "size": args.size,
                    "dtype": args.dtype,
                    "global_batch": args.batch,
                    "frames": args.frames,
                    "params": params,
                    "tflop_per_step": round(_flops(lowered) / 1e12, 3),
                    "lower_s": round(time.perf_counter() - t0, 1),
                }
            )
        )
        return
    state = trainer.init_state()
    batch = parallel.global_batch(synthetic_batch(config, args.batch), trainer.mesh)
    compiled = trainer.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)

    state, metrics = trainer.train_step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    device = jax.devices()[0]
    kind = device.device_kind
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in kind), 0.0)
    # The compiled module is the per-device SPMD program: its FLOPs are one device's share.
    tflops = flops / step_s / 1e12
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    print(
        json.dumps(
            {
                "bench": "train_step",
                "device": kind,
                "platform": device.platform,
                "devices": jax.device_count(),
                "host": platform.node(),
                "size": args.size,
                "dtype": args.dtype,
                "remat": args.remat,
                "scan_layers": args.scan_layers,
                "global_batch": args.batch,
                "frames": args.frames,
                "params": params,
                "compile_s": round(compile_s, 1),
                "step_s": round(step_s, 4),
                "samples_per_s": round(args.batch / step_s, 2),
                "tflop_per_step": round(flops * jax.device_count() / 1e12, 3),
                "tflops_per_device": round(tflops, 3),
                "mfu": round(tflops / peak, 4) if peak else None,
                "loss": float(metrics["loss"]),
            }
        )
    )


if __name__ == "__main__":
    main()
