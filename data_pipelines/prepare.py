"""`gram-data prepare`: raw media -> ArrayRecord shards of decoded frames and filterbank slices.

A TensorFlow Datasets ``GeneratorBasedBuilder`` (manual_dir = the media directories, no downloads,
no TensorFlow: only numpy ``Tensor`` features) writes one small TFDS dataset per *part* of
``records_per_part`` consecutive records. A finished part gets ``DONE.json`` (its ids, spec and
file checksums), so an interrupted run resumes at the first unfinished part; ``manifest.json`` is
written last, when every part is done, and is what the reader (prepared_source) requires.
The layout and what the stored arrays mean are in data_pipelines/prepared_source.py.

    gram-data prepare --annotations test.json --split test --dataset msrvtt \\
        --video-dir videos/ --audio-dir audios/ --out prepared/ [--num-frames 8 --threads 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
import time

import ml_collections
import numpy as np
import tqdm
from PIL import Image

from data_pipelines import annotations, samples
from data_pipelines import prepared_source as ps
from data_pipelines.config import data_config
from data_pipelines.media import MediaError
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video


def all_fbank_slices(
    path, *, mel_bins, target_length, num_clips, mean, std, padding, backend="auto"
) -> np.ndarray:
    """float32[K, target_length, mel_bins]: every normalised slice of the file (padding as in
    media.audio.slice_fbank, so a slice drawn from these equals one the raw path draws)."""
    wave = media_audio.load_waveform(path, sample_rate=media_audio.SAMPLE_RATE)
    window = media_audio.SAMPLE_RATE * 25 // 1000  # one 25 ms Kaldi window
    if wave.shape[0] < window:
        # A short file is bad data (skippable); a refused fbank setting below is a config error.
        raise MediaError(path, f"audio too short for a filterbank: {wave.shape[0]} < {window}")
    features = media_audio.fbank(
        wave, mel_bins=mel_bins, sample_rate=media_audio.SAMPLE_RATE, backend=backend
    )
    features = media_audio.normalize_fbank(features, mean=mean, std=std)
    length = features.shape[0]
    if padding == "reference":
        pad = max(target_length * num_clips - length, target_length - length % target_length)
    else:
        pad = (-length) % target_length if length > 0 else target_length
    padded = np.zeros((length + pad, mel_bins), np.float32)
    padded[:length] = features
    return padded.reshape(-1, target_length, mel_bins)


def _decode_record(job: dict, spec: dict) -> dict:
    """One example of the part (see prepared_source); media errors are recorded, not raised."""
    example = {"index": job["index"], "id": job["id"]}
    frames_shape = (spec["num_frames"], spec["image_size"], spec["image_size"], 3)
    audio_shape = (0, spec["target_length"], spec["mel_bins"])
    for m, empty in (("video", frames_shape), ("audio", audio_shape)):
        if m not in spec["modalities"]:
            continue
        try:
            if job[m] is None:
                raise MediaError(job[f"{m}_missing"], f"no {m} file with this id")
            if m == "video":
                value = media_video.load_frames(
                    job[m],
                    num_frames=spec["num_frames"],
                    train=False,
                    size=spec["image_size"],
                    resize=spec["resize"],
                )
            else:
                value = all_fbank_slices(
                    job[m],
                    mel_bins=spec["mel_bins"],
                    target_length=spec["target_length"],
                    num_clips=spec["num_clips"],
                    mean=spec["norm_mean"],
                    std=spec["norm_std"],
                    padding=spec["padding"],
                    backend=spec["backend"],
                )
            if m == "video" and spec["frame_format"] == "jpeg":
                value = [encode_jpeg(frame, spec["jpeg_quality"]) for frame in value]
            example[m], example[f"present_{m}"], example[f"error_{m}"] = value, True, ""
        except MediaError as err:
            if m == "video" and spec["frame_format"] == "jpeg":
                example[m] = []
            else:
                example[m] = np.zeros(empty, np.uint8 if m == "video" else np.float32)
            example[f"present_{m}"], example[f"error_{m}"] = False, str(err)
    return example


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8[H, W, 3] RGB -> JPEG bytes (4:4:4 chroma: no colour bleeding at 224 pixels)."""
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()


@functools.cache
def _builder_class():
    # lazy: tensorflow_datasets takes 1-4 s to import; only writing shards needs it (not --help,
    # not the argument checks, not the other benches that import this module)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    class GramPreparedPart(tfds.core.GeneratorBasedBuilder):
        """Decoded frames and filterbank slices of a range of records (one prepare part)."""

        VERSION = tfds.core.Version("1.0.0")
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "The media directories are given as manual_dir; nothing is downloaded."
        )

        # tfds looks for checksum files next to the builder's source; for a builder inside an
        # installed package that lookup needs the importlib_resources backport. There is nothing
        # to download, so there are no checksums: no code path.
        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return None

        def __init__(self, *, jobs, spec, num_threads, progress, **kwargs):
            self._jobs, self._spec = jobs, spec
            self._num_threads, self._progress = num_threads, progress
            super().__init__(**kwargs)

        def _info(self):
            s, f = self._spec, tfds.features
            features = {"index": f.Scalar(np.int64), "id": f.Text()}
            if "video" in s["modalities"]:
                shape = (s["num_frames"], s["image_size"], s["image_size"], 3)
                if s["frame_format"] == "jpeg":
                    # One encoded image per frame (about 8x smaller than uint8 at quality 90).
                    features["video"] = f.Sequence(f.Tensor(shape=(), dtype=np.object_))
                else:
                    features["video"] = f.Tensor(shape=shape, dtype=np.uint8)
            if "audio" in s["modalities"]:
                shape = (None, s["target_length"], s["mel_bins"])
                features["audio"] = f.Tensor(shape=shape, dtype=np.float32)
            for m in s["modalities"]:
                features[f"present_{m}"] = f.Scalar(np.bool_)
                features[f"error_{m}"] = f.Text()
            # disable_shuffling keeps the examples in annotation order (row = position - start).
            return tfds.core.DatasetInfo(
                builder=self, features=f.FeaturesDict(features), disable_shuffling=True
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # media paths were resolved by exact id before the builder ran
            return {ps.SPLIT_NAME: self._generate_examples()}

        def _generate_examples(self):
            # PyAV and kaldi-native-fbank release the GIL: threads decode records in parallel.
            with concurrent.futures.ThreadPoolExecutor(self._num_threads) as pool:
                decoded = pool.map(lambda job: _decode_record(job, self._spec), self._jobs)
                for example in decoded:
                    self._progress.update(1)
                    yield example["index"], example

    return GramPreparedPart


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _part_files(part_dir: pathlib.Path) -> dict[str, str]:
    root = part_dir / ps.BUILDER_NAME / "1.0.0"
    return {p.name: _sha256(p) for p in sorted(root.iterdir()) if p.is_file()}


def prepare_split(
    config: ml_collections.ConfigDict,
    split: str,
    out_dir: str | os.PathLike,
    *,
    records_per_part: int = 256,
    num_threads: int = 2,
    progress: bool = True,
    frame_format: str = "uint8",
    jpeg_quality: int = 90,
) -> dict:
    """Prepares ``split`` of ``config`` under ``out_dir/split``; returns the manifest (also saved).

    Re-running after an interruption keeps the finished parts (their DONE.json matches) and redoes
    the rest. ``frame_format``: ``'uint8'`` stores raw frames (fastest to read), ``'jpeg'`` stores
    JPEG bytes of ``jpeg_quality`` (smaller on disk, lossy). Media problems do not stop it: they are
    recorded per record and listed in the manifest (``missing``, ``errors``); the training config's
    bad_data policy applies when the data is read.
    """
    if ps.is_remote(out_dir):
        raise ValueError(
            f"--out {out_dir}: prepare writes a local folder; prepare there, then copy it to the "
            "bucket (gcloud storage cp -r DIR gs://BUCKET/) and read it with "
            "data.prepared_dir=gs://BUCKET/DIR"
        )
    # lazy: tensorflow_datasets takes 1-4 s to import; only writing shards needs it (not --help,
    # not the argument checks, not the other benches that import this module)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    start_time = time.time()
    path = os.fspath(config.annotations[split])
    records = annotations.load_records(path, dataset=config.dataset, caption_mode="all")
    modalities = [m for m in ("video", "audio") if m in config.modalities]
    if not modalities:
        raise ValueError(
            f"data config key 'modalities' {tuple(config.modalities)}: nothing to prepare"
        )
    spec = {
        **ps.config_spec(config),
        "num_frames": max(config.num_frames, config.eval_num_frames or config.num_frames),
        "num_clips": int(config.audio.num_clips),
        "modalities": modalities,
        "frame_format": frame_format,
        "jpeg_quality": int(jpeg_quality),
    }
    if frame_format not in ps.FRAME_FORMATS:
        raise ValueError(f"frame_format: expected one of {ps.FRAME_FORMATS}, got {frame_format!r}")
    jobs = []
    for position, record in enumerate(records):
        job = {"index": position, "id": str(record.id)}
        for m in modalities:
            directory = config[f"{m}_dir"]
            if not directory:
                raise ValueError(f"data config key '{m}_dir': needed to prepare {m!r}")
            found = samples.find_record_media(
                config.dataset, record.id, m, directory, audio_prefix=config.audio_prefix
            )
            job[m] = None if found is None else os.fspath(found)
            job[f"{m}_missing"] = os.path.join(os.fspath(directory), str(record.id))
        jobs.append(job)
    root = pathlib.Path(ps.split_dir(out_dir, split))  # local (above): pathlib's rglob below
    root.mkdir(parents=True, exist_ok=True)
    (root / ps.MANIFEST).unlink(missing_ok=True)  # the manifest marks a complete split only
    builder_cls = _builder_class()
    tfds.disable_progress_bar()
    bar = tqdm.tqdm(total=len(jobs), desc=f"prepare {split}", unit="rec", disable=not progress)
    parts = []
    for k, begin in enumerate(range(0, len(jobs), records_per_part)):
        part_jobs = jobs[begin : begin + records_per_part]
        part_dir = root / f"part-{k:05d}"
        marker = part_dir / "DONE.json"
        expect = {"start": begin, "stop": begin + len(part_jobs), "spec": spec}
        expect["ids_sha256"] = ps.ids_digest(j["id"] for j in part_jobs)
        if marker.is_file():
            done = json.loads(marker.read_text())
            if all(done.get(key) == value for key, value in expect.items()):
                bar.update(len(part_jobs))
                parts.append({"dir": part_dir.name, **done})
                continue
        shutil.rmtree(part_dir, ignore_errors=True)  # unfinished or stale: redo from scratch
        builder = builder_cls(
            jobs=part_jobs,
            spec=spec,
            num_threads=num_threads,
            progress=bar,
            data_dir=os.fspath(part_dir),
            file_format="array_record",
        )
        manual = tfds.download.DownloadConfig(manual_dir=os.fspath(root))
        # tfds prints its status lines on stdout; keep stdout for the JSON summary.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare(download_config=manual)
        source = ps.open_part(part_dir)
        summary = {"missing": {}, "errors": {}}
        for m in modalities:
            absent = [(j["id"], source[i][f"error_{m}"]) for i, j in enumerate(part_jobs)]
            absent = [(i, e.decode() if isinstance(e, bytes) else e) for i, e in absent if e]
            summary["missing"][m] = [i for i, _ in absent]
            summary["errors"][m] = dict(absent)
        done = {**expect, **summary, "files": _part_files(part_dir)}
        marker.write_text(json.dumps(done, indent=1))
        parts.append({"dir": part_dir.name, **done})
    bar.close()
    size = sum(f.stat().st_size for p in parts for f in (root / p["dir"]).rglob("*") if f.is_file())
    manifest = _manifest(config, split, path, records, spec, parts, size, time.time() - start_time)
    (root / ps.MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest(config, split, path, records, spec, parts, size, elapsed) -> dict:
    modalities = spec["modalities"]
    missing = {m: [i for p in parts for i in p["missing"][m]] for m in modalities}
    errors = {m: {k: v for p in parts for k, v in p["errors"][m].items()} for m in modalities}
    shapes = {}
    if "video" in modalities:
        shapes["video"] = [spec["num_frames"], spec["image_size"], spec["image_size"], 3]
    if "audio" in modalities:
        shapes["audio"] = [None, spec["target_length"], spec["mel_bins"]]
    return {
        "format_version": ps.FORMAT_VERSION,
        "split": split,
        "dataset": config.dataset,
        "annotation_path": path,
        "annotation_sha256": _sha256(pathlib.Path(path)),
        "num_records": len(records),
        "ids_sha256": ps.ids_digest(r.id for r in records),
        "spec": spec,
        "shapes": shapes,
        "counts": {f"present_{m}": len(records) - len(missing[m]) for m in modalities},
        "missing": missing,
        "errors": errors,
        "parts": [
            {k: p[k] for k in ("dir", "start", "stop", "ids_sha256", "files")} for p in parts
        ],
        "bytes": size,
        "seconds": round(elapsed, 2),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gram-data prepare", description=__doc__.split("\n")[0])
    p.add_argument("--annotations", required=True, help="annotation JSON of the split")
    p.add_argument("--split", default="train", help="split name (sub-directory of --out)")
    p.add_argument(
        "--dataset",
        default=None,
        type=lambda v: None if v.lower() == "none" else v,
        help="layout checked by annotations.load_records (msrvtt, vatex, ...); default none",
    )
    p.add_argument("--video-dir", default=None)
    p.add_argument("--audio-dir", default=None)
    p.add_argument("--out", required=True, help="prepared_dir of the data config")
    p.add_argument("--modalities", default="video,audio", help="comma list of video,audio")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize", default="crop_flip", choices=("crop_flip", "resize"))
    p.add_argument("--mel-bins", type=int, default=64)
    p.add_argument("--target-length", type=int, default=1024)
    p.add_argument("--num-clips", type=int, default=1)
    p.add_argument("--padding", default="fixed", choices=("fixed", "reference"))
    p.add_argument("--frame-format", default="uint8", choices=("uint8", "jpeg"))
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--records-per-part", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="decoding threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gram-data prepare ...` (argv without the sub-command). Returns 0."""
    args = _parser().parse_args(argv)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    config = data_config(
        dataset=args.dataset,
        annotations={args.split: args.annotations},
        video_dir=args.video_dir,
        audio_dir=args.audio_dir,
        modalities=modalities,
        num_frames=args.num_frames,
        image_size=args.image_size,
        resize=args.resize,
        audio=dict(
            mel_bins=args.mel_bins,
            target_length=args.target_length,
            num_clips=args.num_clips,
            padding=args.padding,
        ),
        prepared_dir=args.out,
    )
    manifest = prepare_split(
        config,
        args.split,
        args.out,
        records_per_part=args.records_per_part,
        num_threads=args.threads,
        progress=not args.no_progress,
        frame_format=args.frame_format,
        jpeg_quality=args.jpeg_quality,
    )
    summary = {k: manifest[k] for k in ("split", "num_records", "counts", "bytes", "seconds")}
    print(json.dumps(summary))
    for m, errs in manifest["errors"].items():
        for media_id, reason in errs.items():
            print(f"{m} {media_id}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
