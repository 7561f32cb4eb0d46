"""Benchmark: per-sample media decoding cost on the real clips (one process, one thread of work).

Prints one JSON line per measurement (median seconds over ``--reps`` runs per clip, summed over the
4 real clips of data_pipelines/reference_data/media):
- ``video_sequential``: ``load_frames`` (8 frames, 224x224, evaluation), one front-to-back decode;
- ``video_seek_per_frame``: the released code's access pattern on the same decoder: one seek to the
  nearest key frame before each of the 8 frames, then decode up to it (PyAV, same transform);
- ``audio_fbank_<backend>``: ``load_fbank_slices`` (decode, resample, 64-bin fbank, 1 slice);
- ``tokenize``: ``Tokenizer.encode`` of 1,000 real MSR-VTT captions (max_len 40).

    python bench/media_decode.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import av
import numpy as np

from data_pipelines.annotations import load_records
from data_pipelines.media import audio, text, video
from data_pipelines.reference_media import REFERENCE_DATA_DIR


def seek_per_frame(path: pathlib.Path, num_frames: int, size: int = 224) -> np.ndarray:
    """8 evaluation frames, decoding from the previous key frame for each one (as cv2 seeks do)."""
    total = video.count_frames(path)
    wanted = video.sample_frame_indices(total, num_frames, train=False, rng=None)
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        for index in wanted:
            target = int(index / rate / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    rgb = frame.to_ndarray(format="rgb24")
                    box, _ = video.crop_box(
                        *rgb.shape[:2], size=size, resize="crop_flip", train=False, rng=None
                    )
                    out.append(video.transform_frame(rgb, box, False, size))
                    break
    return np.stack(out)


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    videos = sorted((REFERENCE_DATA_DIR / "media" / "videos").glob("video*.mp4"))
    audios = sorted((REFERENCE_DATA_DIR / "media" / "audios").glob("audio*.mp3"))
    meta = {"machine": platform.machine(), "python": platform.python_version()}

    def emit(name, seconds, items):
        row = {"bench": name, "seconds": round(seconds, 4), "items": items, **meta}
        row["items_per_second"] = round(items / seconds, 2)
        print(json.dumps(row), flush=True)

    def frames_sequential():
        return sum(
            timed(lambda p=p: video.load_frames(p, num_frames=8, train=False), args.reps)
            for p in videos
        )

    emit("video_sequential", frames_sequential(), len(videos))
    emit(
        "video_seek_per_frame",
        sum(timed(lambda p=p: seek_per_frame(p, 8), args.reps) for p in videos),
        len(videos),
    )
    for backend in ("kaldi_native", "numpy"):
        seconds = sum(
            timed(
                lambda p=p, b=backend: audio.load_fbank_slices(p, train=False, backend=b),
                args.reps,
            )
            for p in audios
        )
        emit(f"audio_fbank_{backend}", seconds, len(audios))
    msrvtt_test = REFERENCE_DATA_DIR / "annotations/msrvtt/descs_ret_test.json"
    captions = [r.captions[0] for r in load_records(msrvtt_test)]
    # A fresh tokenizer per run: its per-word cache starts empty, as in a new worker.
    emit("tokenize", timed(lambda: text.Tokenizer().encode(captions, 40), args.reps), 1000)


if __name__ == "__main__":
    main()
