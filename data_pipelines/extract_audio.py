"""``gram-data extract-audio``: the audio track of every video -> ``<video_id>.mp3``, 16 kHz mono.

The released code reads each item's audio from ``<audio folder>/<id>.mp3`` (any rate: it
resamples to 16 kHz itself) and keeps only the items whose file exists; how to make those files
was never published (users of the released repository ask). This command writes them from the
videos::

    gram-data extract-audio --video-dir msrvtt/videos --audio-dir msrvtt/audios

- one file per video, named by the video's stem (``video7020.mp4`` -> ``video7020.mp3``), MP3 at
  16 kHz mono: the channels averaged and resampled exactly as the training pipeline does it
  (``media.audio.load_waveform``), so training on the extracted files differs from decoding the
  video's own track only by the MP3 coding;
- a video without an audio stream gets no file (the released protocol then drops it: MSR-VTT test
  884 of 1,000) and is counted; a video whose audio fails to decode is counted apart, with its
  reason; neither stops the run. One summary line at the end; exit status 1 only when some
  audio failed to decode;
- files already there are kept (a rerun after an interruption continues); each file is written
  under a temporary name and renamed, so a killed run never leaves a partial ``.mp3``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import pathlib
import sys
import threading
from collections.abc import Sequence

import av
import numpy as np

from data_pipelines.media import VIDEO_EXTENSIONS, MediaError
from data_pipelines.media import audio as media_audio

SAMPLE_RATE = media_audio.SAMPLE_RATE
BIT_RATE = 64_000  # ample for 16 kHz mono speech and sound (the filterbank stops at 8 kHz)


@dataclasses.dataclass
class Summary:
    """What :func:`extract_audio` did, per video stem."""

    videos: int = 0
    written: list[str] = dataclasses.field(default_factory=list)
    existing: list[str] = dataclasses.field(default_factory=list)
    no_audio: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def line(self, audio_dir) -> str:
        text = (
            f"extract-audio: {self.videos} videos -> {audio_dir}: {len(self.written)} written, "
            f"{len(self.existing)} already there, {len(self.no_audio)} without an audio stream "
            f"(no file), {len(self.failed)} failed"
        )
        if self.no_audio:
            text += f"; no audio: {', '.join(sorted(self.no_audio)[:5])}"
            text += " ..." if len(self.no_audio) > 5 else ""
        if self.failed:
            first = sorted(self.failed)[:3]
            text += "; failed: " + "; ".join(f"{s} ({self.failed[s]})" for s in first)
        return text


def write_mp3(wave: np.ndarray, path: str | os.PathLike) -> None:
    """Encodes float32[N] mono samples in [-1, 1] at 16 kHz as an MP3 file at ``path``."""
    with av.open(os.fspath(path), mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = BIT_RATE
        frame = av.AudioFrame.from_ndarray(
            np.clip(wave, -1.0, 1.0).astype(np.float32)[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _videos(video_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """{stem: path} of the video files (first of VIDEO_EXTENSIONS per stem)."""
    if not video_dir.is_dir():
        raise MediaError(video_dir, "video directory does not exist")
    rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
    found: dict[str, pathlib.Path] = {}
    for entry in sorted(video_dir.iterdir()):
        ext = entry.suffix.lower()
        if not entry.is_file() or ext not in rank:
            continue
        best = found.get(entry.stem)
        if best is None or rank[ext] < rank[best.suffix.lower()]:
            found[entry.stem] = entry
    return found


def _extract_one(video: pathlib.Path, target: pathlib.Path) -> str | None:
    """Writes ``target``; returns None, or 'no_audio', or raises MediaError."""
    try:
        wave = media_audio.load_waveform(video, sample_rate=SAMPLE_RATE)
    except MediaError as err:
        if err.reason.startswith("no audio stream"):
            return "no_audio"
        raise
    # A name unique to this process and thread; created by FFmpeg with the usual permissions.
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.mp3.partial")
    try:
        write_mp3(wave, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return None


def extract_audio(
    video_dir: str | os.PathLike,
    audio_dir: str | os.PathLike,
    *,
    workers: int = 2,
    overwrite: bool = False,
) -> Summary:
    """Writes ``audio_dir/<stem>.mp3`` for every video of ``video_dir`` that has an audio stream.

    Returns the :class:`Summary` (nothing raises for a single video). Raises MediaError when
    ``video_dir`` does not exist.
    """
    video_dir, audio_dir = pathlib.Path(video_dir), pathlib.Path(audio_dir)
    videos = _videos(video_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(videos=len(videos))
    todo = []
    for stem, path in videos.items():
        target = audio_dir / f"{stem}.mp3"
        if target.exists() and not overwrite:
            summary.existing.append(stem)
        else:
            todo.append((stem, path, target))

    def run(job):
        stem, path, target = job
        try:
            return stem, _extract_one(path, target), None
        except (MediaError, av.error.FFmpegError, OSError, ValueError) as err:
            reason = err.reason if isinstance(err, MediaError) else f"{type(err).__name__}: {err}"
            return stem, "failed", reason

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for stem, outcome, reason in pool.map(run, todo):
            if outcome is None:
                summary.written.append(stem)
            elif outcome == "no_audio":
                summary.no_audio.append(stem)
            else:
                summary.failed[stem] = reason
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``gram-data extract-audio`` entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="gram-data extract-audio",
        description="Write <video stem>.mp3 (16 kHz mono) for every video that has audio.",
    )
    parser.add_argument("--video-dir", required=True, help="folder of <id>.<ext> videos")
    parser.add_argument("--audio-dir", required=True, help="output folder of <id>.mp3 files")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing .mp3 files")
    args = parser.parse_args(argv)
    try:
        summary = extract_audio(
            args.video_dir, args.audio_dir, workers=args.workers, overwrite=args.overwrite
        )
    except MediaError as err:
        print(f"gram-data extract-audio: {err}", file=sys.stderr)
        return 2
    print(summary.line(args.audio_dir))
    sys.stdout.flush()
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
