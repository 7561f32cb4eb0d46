"""``gram-data validate``: every problem of a dataset, found without training.

Checks, per annotation file:
- the file is a JSON list and every record parses (id, captions, subtitle; the layout's fields);
- ids are unique;
- each record's video file exists and decodes to the end (``--mode decode``; ``--mode probe`` only
  opens the container and decodes the first frame), and likewise its audio stream (any container,
  any channel count and sample rate, at least one 25 ms filterbank frame).

Prints one line per problem, ``BAD <kind> <id> <path>: <reason>``, then the counts per kind, and
exits with status 1 when it found any problem (0 otherwise, 2 for bad arguments).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import os
import sys
from collections.abc import Sequence

import av
import numpy as np

from data_pipelines import annotations as ann
from data_pipelines.datasets import DatasetLayout, get_layout
from data_pipelines.media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, MediaError, media_index
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video

MODES = ("decode", "probe")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad item: ``kind`` (annotation, duplicate_id, missing_video, missing_audio, bad_video,
    bad_audio), the record id (None for file-level problems), the file, and the reason."""

    kind: str
    record_id: str | None
    path: str
    reason: str

    def line(self) -> str:
        return f"BAD {self.kind} {self.record_id or '-'} {self.path}: {self.reason}"


@dataclasses.dataclass
class Report:
    """What :func:`validate` found: records parsed, media files checked, and the problems."""

    annotation_path: str
    records: int = 0  # rows of the file (a row-per-caption file repeats each video's id)
    videos: int = 0  # distinct ids among the rows that parse
    captions: int = 0  # captions of those rows (a caption list counts each element)
    checked: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def counts(self) -> collections.Counter:
        return collections.Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        checked = ", ".join(f"{n} {m} files" for m, n in sorted(self.checked.items()))
        head = (
            f"{self.annotation_path}: {self.records} records, {self.videos} distinct videos, "
            f"{self.captions} captions"
        )
        head += f", {checked} checked" if checked else ""
        if not self.problems:
            return head + ": no problems"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.counts().items()))
        return f"{head}: {len(self.problems)} problems ({kinds})"


def _parse_all(path: str, dataset: str | None, report: Report) -> list[ann.Record]:
    """One record per distinct id that parses (rows repeating an id are grouped, as training
    reads them); one Problem per row that does not parse or disagrees with its id's first row."""
    try:
        raw_records = ann.read_annotation_list(path)
    except ann.AnnotationError as err:
        report.problems.append(Problem("annotation", None, path, str(err).split(": ", 1)[-1]))
        return []
    required = get_layout(dataset).required_fields if dataset else ()
    records: list[ann.Record] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(raw_records):
        try:
            record = ann.parse_record(raw, path=path, index=index)
            absent = [f for f in required if f not in raw]
            if absent:
                raise ann.AnnotationError(
                    path,
                    f"missing, required by the {dataset!r} layout",
                    index=index,
                    field=absent[0],
                )
        except ann.AnnotationError as err:
            where = f"record {index}" + (f", field {err.field!r}" if err.field else "")
            reason = str(err).split(": ", 1)[-1]
            record_id = _raw_id(raw)
            report.problems.append(Problem("annotation", record_id, path, f"{where}: {reason}"))
            continue
        if record.id in first_seen:
            first = records[first_seen[record.id]]
            if record.subtitle != first.subtitle:
                report.problems.append(
                    Problem(
                        "annotation",
                        record.id,
                        path,
                        f"record {index}, field 'subtitle': another subtitle than the first row "
                        "of this id; rows of one video must agree",
                    )
                )
                continue
            report.captions += len(record.captions)
            continue
        first_seen[record.id] = len(records)
        records.append(record)
        report.captions += len(record.captions)
    report.records = len(raw_records)
    report.videos = len(records)
    return records


def _raw_id(raw) -> str | None:
    """The id of an unparsable record when it has one (for the report line)."""
    if isinstance(raw, dict):
        for field in ann.ID_FIELDS:
            if isinstance(raw.get(field), str | int):
                return str(raw[field])
    return None


def check_video(path: str, mode: str = "decode") -> None:
    """Raises MediaError if the video at ``path`` would fail in the pipeline."""
    media_video.probe_video(path, full=mode == "decode")


def check_audio(path: str, mode: str = "decode") -> None:
    """Raises MediaError if the audio stream at ``path`` would fail in the pipeline."""
    if mode == "decode":
        wave = media_audio.load_waveform(path)
        try:
            media_audio.fbank(wave)
        except ValueError as err:
            raise MediaError(path, f"audio too short for a filterbank: {err}") from err
        if not np.isfinite(wave).all():
            raise MediaError(path, "audio decodes to non-finite samples")
        return
    media_audio.probe_audio(path)  # the stream exists and one packet decodes


def _check(kind_prefix: str, check, record_id: str, path: str, mode: str) -> Problem | None:
    try:
        if os.path.getsize(path) == 0:
            return Problem(f"bad_{kind_prefix}", record_id, path, "file is empty (0 bytes)")
        check(path, mode)
    except MediaError as err:
        return Problem(f"bad_{kind_prefix}", record_id, err.path, err.reason)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        return Problem(f"bad_{kind_prefix}", record_id, path, f"{type(err).__name__}: {err}")
    return None


def validate(
    annotations: str | os.PathLike,
    *,
    video_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    mode: str = "decode",
    workers: int = 2,
    audio_prefix: str | None = None,
) -> Report:
    """Check an annotation file and its media; returns a :class:`Report` (never raises for data).

    Args:
      annotations: the VAST-style JSON file.
      video_dir, audio_dir: media folders (None: that modality is not checked). They may be the
        same folder: then the audio stream is read from the video files.
      dataset: a layout name (media naming such as AudioCaps' stems, required fields).
      mode: ``'decode'`` (decode every stream to the end) or ``'probe'`` (open + first frame).
      workers: threads decoding in parallel (FFmpeg releases the GIL).
      audio_prefix: prefix of the audio file stems (the data config key; None = the layout's),
        e.g. ``'audio_'`` for DiDeMo audio under its older upstream name.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = os.fspath(annotations)
    report = Report(annotation_path=path)
    records = _parse_all(path, dataset, report)
    if dataset:
        layout = get_layout(dataset, audio_prefix=audio_prefix)
    elif audio_prefix:
        layout = DatasetLayout(name="", annotations={}, audio_prefix=audio_prefix)
    else:
        layout = None
    jobs = []
    for modality, directory, check in (
        ("video", video_dir, check_video),
        ("audio", audio_dir, check_audio),
    ):
        if directory is None:
            continue
        try:
            media_index(directory)
        except MediaError as err:
            report.problems.append(Problem(f"missing_{modality}", None, err.path, err.reason))
            continue
        for record in records:
            found = _find(layout, record.id, modality, directory)
            if found is None:
                stem = layout.stem(record.id, modality) if layout else record.id
                exts = layout.extensions(modality) if layout else _default_exts(modality)
                report.problems.append(
                    Problem(
                        f"missing_{modality}",
                        record.id,
                        os.path.join(os.fspath(directory), stem),
                        f"no {modality} file with this stem and one of {', '.join(exts)}",
                    )
                )
                continue
            jobs.append((modality, check, record.id, os.fspath(found)))
            report.checked[modality] += 1
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda job: _check(job[0], job[1], job[2], job[3], mode), jobs)
        report.problems.extend(p for p in results if p is not None)
    return report


def _default_exts(modality: str) -> tuple[str, ...]:
    return VIDEO_EXTENSIONS if modality == "video" else AUDIO_EXTENSIONS


def _find(layout: DatasetLayout | None, record_id: str, modality: str, directory):
    if layout is not None:
        return layout.find(record_id, modality, directory)
    return media_index(directory).find(record_id, _default_exts(modality))


def main(argv: Sequence[str] | None = None) -> int:
    """``gram-data validate`` entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="gram-data validate",
        description="Report every problem of a dataset (annotations and media) without training.",
    )
    parser.add_argument("--annotations", required=True, nargs="+", help="annotation JSON file(s)")
    parser.add_argument("--video-dir", help="folder of <id>.<ext> videos (omit: not checked)")
    parser.add_argument("--audio-dir", help="folder of <id>.<ext> audio files (omit: not checked)")
    parser.add_argument("--dataset", help="layout name: msrvtt, didemo, activitynet, vatex, ...")
    parser.add_argument(
        "--audio-prefix",
        help="prefix of audio file stems (default: the layout's; 'audio_' for older DiDeMo audio)",
    )
    parser.add_argument("--mode", choices=MODES, default="decode", help="decode fully or probe")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if args.dataset:
        try:
            get_layout(args.dataset)
        except ValueError as err:
            parser.error(str(err))
    total = 0
    for path in args.annotations:
        report = validate(
            path,
            video_dir=args.video_dir,
            audio_dir=args.audio_dir,
            dataset=args.dataset,
            mode=args.mode,
            workers=args.workers,
            audio_prefix=args.audio_prefix,
        )
        for problem in report.problems:
            print(problem.line())
        print(report.summary())
        total += len(report.problems)
    sys.stdout.flush()
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
