"""Input-pipeline throughput on the real clips: raw path, prepared path, seek-per-frame decoder.

Three ways to produce the same training samples (8 frames at 224x224 crop_flip + one 1024x64
filterbank slice + a tokenized caption) from the 4 real clips of
data_pipelines/reference_data/media (4.4-14.8 s, 360x640, 30 fps), in one run:

- ``raw``: the Grain pipeline decoding the original files (PyAV, one sequential decode per clip);
- ``prepared``: the Grain pipeline reading `gram-data prepare` ArrayRecord shards of uint8 frames
  (``prepared_jpeg``: of JPEG frames); the one-off preparation time is reported separately;
- ``seek_per_frame``: the released GRAM code's video reader, OpenCV ``VideoCapture`` with one
  ``CAP_PROP_POS_FRAMES`` seek + ``read`` per sampled frame, with the same frame sampling, crop,
  audio and tokenizer code as ``raw`` (so the difference is the video decoding strategy).

Each path runs in this process with one decoding thread and no worker processes. CPU seconds
(all threads of the process, so FFmpeg's own threads are counted) give samples per CPU-core
second, the number that scales with cores; wall seconds are printed too. JSON lines on stdout.

    python bench/pipeline.py [--samples 48] [--prepared-samples 800]

Needs opencv-python-headless for the seek-per-frame baseline (bench only).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np
from absl import flags

from data_pipelines import pipeline, prepare, samples, transforms
from data_pipelines.config import data_config
from data_pipelines.datasets.reference_clips import LAYOUT, MEDIA_DIR
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video
from data_pipelines.media.text import Tokenizer


def clip_dataset() -> dict:
    """Data-config keys reading the 4 committed clips in place (the reference_clips layout)."""
    return {
        "dataset": LAYOUT.name,
        "annotations": {"train": str(MEDIA_DIR / LAYOUT.annotations["train"])},
        "video_dir": str(MEDIA_DIR / LAYOUT.video_dir),
        "audio_dir": str(MEDIA_DIR / LAYOUT.audio_dir),
    }


def _clock():
    return time.perf_counter(), time.process_time()


def _result(name: str, n: int, start, extra=None) -> dict:
    wall = time.perf_counter() - start[0]
    cpu = time.process_time() - start[1]
    row = {
        "bench": "pipeline",
        "path": name,
        "samples": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "samples_per_s": round(n / wall, 2),
        "samples_per_cpu_s": round(n / cpu, 2),
    }
    row.update(extra or {})
    print(json.dumps(row), flush=True)
    return row


def run_pipeline(config, name: str, num_samples: int, extra=None) -> dict:
    """Times ``num_samples`` training samples of the Grain pipeline after a 1-batch warm-up."""
    it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    next(it)  # warm-up: opens files, loads the vocabulary
    start, n = _clock(), 0
    while n < num_samples:
        batch = next(it)
        n += batch["video"].shape[0]
    return _result(name, n, start, extra)


def seek_per_frame_frames(path: str, num_frames: int, rng, size: int) -> np.ndarray:
    """uint8[F, size, size, 3] as the released code reads them: one OpenCV seek per frame."""
    import cv2

    cap = cv2.VideoCapture(path)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = media_video.sample_frame_indices(total, num_frames, train=True, rng=rng)
    frames, box, flip = [], None, False
    for index in wanted:
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, bgr = cap.read()
        if not ok:
            raise RuntimeError(f"{path}: OpenCV failed to read frame {index}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if box is None:
            # The same crop code as the raw path.
            box, flip = media_video.crop_box(
                rgb.shape[0], rgb.shape[1], size=size, resize="crop_flip", train=True, rng=rng
            )
        frames.append(media_video.transform_frame(rgb, box, flip, size))
    cap.release()
    return np.stack(frames)


def run_seek_per_frame(config, num_samples: int) -> dict:
    split = samples.load_split(config, "train")
    tokenizer = Tokenizer()
    plan = pipeline.TrainPlan(len(split), config.batch_size, 0, 1, config.seed, True, None)

    def one(j):
        sample, epoch, _ = (int(v) for v in plan[j])
        record = int(split.sample_record[sample])
        video_rng, audio_rng = transforms.sample_rngs(config.seed, epoch, sample)
        video = seek_per_frame_frames(
            split.media_paths["video"][record], config.num_frames, video_rng, config.image_size
        )
        audio = media_audio.load_fbank_slices(
            split.media_paths["audio"][record], num_clips=1, train=True, rng=audio_rng
        )
        ids, mask = tokenizer.encode(split.captions[record][0], config.text_max_len.text)
        return video, audio, ids, mask

    one(0)  # warm-up
    start = _clock()
    for j in range(1, num_samples + 1):
        one(j)
    return _result("seek_per_frame", num_samples, start, {"decoder": "opencv " + _cv2_version()})


def _cv2_version() -> str:
    import cv2

    return cv2.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--samples", type=int, default=48, help="samples timed on raw and seek paths"
    )
    parser.add_argument("--prepared-samples", type=int, default=800)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        layout = clip_dataset()
        common = dict(
            layout,
            modalities=("video", "audio", "text"),
            num_frames=8,
            image_size=224,
            resize="crop_flip",
            batch_size=4,
            read_threads=1,
            prefetch_buffer_size=4,
            worker_count=0,
        )
        shape = {"frames": 8, "image_size": 224, "audio": [1, 1024, 64], "cores": os.cpu_count()}
        raw = run_pipeline(data_config(**common), "raw", args.samples, shape)
        seek = run_seek_per_frame(data_config(**common), args.samples)
        runs = {}
        for frame_format in ("uint8", "jpeg"):
            prepared_dir = root / f"prepared_{frame_format}"
            config = data_config(**common, prepared_dir=str(prepared_dir))
            start = _clock()
            manifest = prepare.prepare_split(
                config,
                "train",
                prepared_dir,
                num_threads=1,
                progress=False,
                frame_format=frame_format,
            )
            name = "prepared" if frame_format == "uint8" else "prepared_jpeg"
            extra = {"bytes": manifest["bytes"], "frame_format": frame_format}
            _result(f"prepare_once_{frame_format}", manifest["num_records"], start, extra)
            runs[name] = run_pipeline(config, name, args.prepared_samples, {**shape, **extra})
        prepared = runs["prepared"]
    per_core = {r["path"]: r["samples_per_cpu_s"] for r in (raw, seek, prepared)}
    summary = {
        "bench": "pipeline_summary",
        "prepared_over_raw": round(per_core["prepared"] / per_core["raw"], 2),
        "raw_over_seek_per_frame": round(per_core["raw"] / per_core["seek_per_frame"], 2),
        "prepared_jpeg_over_raw": round(
            runs["prepared_jpeg"]["samples_per_cpu_s"] / per_core["raw"], 2
        ),
        "targets": {"prepared_over_raw": 5.0, "raw_over_seek_per_frame": 2.0},
    }
    summary["targets_met"] = bool(
        summary["prepared_over_raw"] >= 5.0 and summary["raw_over_seek_per_frame"] >= 2.0
    )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
