"""``gram-data validate`` on real clips plus real broken files; the ``gram-data`` dispatch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from media_fixtures import write_index_video

from data_pipelines import cli, validate

pytestmark = pytest.mark.media


@pytest.fixture
def dataset(tmp_path, reference_data):
    """videos/ and audios/ with 2 good items (real clips), broken items, and the annotations."""
    media = reference_data / "media"
    videos, audios = tmp_path / "videos", tmp_path / "audios"
    videos.mkdir()
    audios.mkdir()
    for i in (1, 3):
        (videos / f"good{i}.mp4").symlink_to(media / "videos" / f"video{i}.mp4")
        (audios / f"good{i}.mp3").symlink_to(media / "audios" / f"audio{i}.mp3")
    (videos / "empty.mp4").write_bytes(b"")
    (audios / "empty.mp3").symlink_to(media / "audios" / "audio4.mp3")
    data = (media / "videos" / "video1.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 3])  # moov first: partial decode
    (audios / "cut.mp3").write_bytes(b"\x00" * 64)  # not audio at all
    write_index_video(videos / "silent.mp4", 12)  # a real H.264 video without audio stream
    (audios / "silent.wav").symlink_to(videos / "silent.mp4")  # "audio" file with no audio
    (videos / "good10.mp4").symlink_to(media / "videos" / "video2.mp4")  # prefix trap
    records = [
        {"video_id": "good1", "desc": "A dog is barking"},
        {"video_id": "good3", "desc": ["A red cat is meowing", "a cat"]},
        {"video_id": "empty", "desc": "empty video"},
        {"video_id": "cut", "desc": "truncated video, garbage audio"},
        {"video_id": "silent", "desc": "no audio stream"},
        {"video_id": "good", "desc": "missing everywhere (good1, good10 exist)"},
        {"video_id": "nocap"},
        {"video_id": "good1", "desc": "another caption of good1"},  # grouped
        {"video_id": "good3", "desc": "a cat", "subtitle": "meow"},  # disagrees with row 1
    ]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(records))
    return path, videos, audios


def test_validate_reports_every_problem(dataset, capsys):
    annotations, videos, audios = dataset
    status = validate.main(
        ["--annotations", str(annotations), "--video-dir", str(videos), "--audio-dir", str(audios)]
    )
    assert status == 1
    lines = capsys.readouterr().out.strip().splitlines()
    bad = sorted(line for line in lines if line.startswith("BAD "))
    expected = [
        ("BAD annotation good3", "record 8, field 'subtitle': another subtitle than the first"),
        ("BAD annotation nocap", "record 6: no caption field"),
        ("BAD bad_audio cut", "cut.mp3: FFmpeg cannot open"),
        ("BAD bad_audio silent", "silent.wav: no audio stream"),
        ("BAD bad_video cut", "cut.mp4: video is truncated: the header announces 131 frames"),
        ("BAD bad_video empty", "empty.mp4: file is empty (0 bytes)"),
        ("BAD missing_audio good", "audios/good: no audio file"),
        ("BAD missing_video good", "videos/good: no video file"),
    ]
    assert len(bad) == len(expected), bad
    for line, (start, part) in zip(bad, expected, strict=True):
        assert line.startswith(start) and part in line, line
    assert lines[-1] == (
        f"{annotations}: 9 records, 6 distinct videos, 8 captions, 5 audio files, 5 video files "
        "checked: 8 problems (annotation 2, bad_audio 2, bad_video 2, missing_audio 1, "
        "missing_video 1)"
    )


def test_validate_clean_subset_and_modes(dataset, tmp_path):
    annotations, videos, audios = dataset
    clean = tmp_path / "clean.json"
    good = [r for r in json.loads(annotations.read_text())[:2]]
    clean.write_text(json.dumps(good))
    for mode in validate.MODES:
        report = validate.validate(clean, video_dir=videos, audio_dir=audios, mode=mode)
        assert report.problems == [] and report.records == 2
        assert report.checked == {"video": 2, "audio": 2}
    # Audio read from the video files themselves: the silent video has no audio stream, the
    # truncated one ends early (a probe, which decodes one packet, cannot see that).
    for mode, bad in [("decode", {"silent", "cut", "empty"}), ("probe", {"silent", "empty"})]:
        report = validate.validate(annotations, audio_dir=videos, mode=mode)
        assert {p.record_id for p in report.problems if p.kind == "bad_audio"} == bad


def test_validate_real_annotations_with_layout(reference_data, tmp_path):
    report = validate.validate(
        reference_data / "annotations" / "didemo" / "descs_ret_test.json", dataset="didemo"
    )
    assert report.records == 1003 and report.problems == []
    # DiDeMo audio files are named <id>.mp3; an empty folder reports each of them as missing,
    # under the older upstream name audio_<id> when audio_prefix asks for it.
    (tmp_path / "a").mkdir()
    for prefix, stem in ((None, ""), ("audio_", "audio_")):
        report = validate.validate(
            reference_data / "annotations" / "didemo" / "descs_ret_test.json",
            audio_dir=tmp_path / "a",
            dataset="didemo",
            audio_prefix=prefix,
        )
        assert report.counts() == {"missing_audio": 1003}
        first = report.problems[0]
        assert first.path == str(tmp_path / "a" / f"{stem}{first.record_id}")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"video_id": 1,')
    report = validate.validate(broken)
    assert [p.kind for p in report.problems] == ["annotation"]
    assert "invalid JSON" in report.problems[0].reason


def test_command_line(dataset):
    annotations, videos, audios = dataset
    args = ["validate", "--annotations", str(annotations), "--video-dir", str(videos)]
    done = subprocess.run(
        [sys.executable, "-m", "data_pipelines.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "BAD bad_video empty" in done.stdout and "problems" in done.stdout.splitlines()[-1]


def test_cli_dispatch(capsys):
    assert cli.run([]) == 2
    assert cli.run(["--help"]) == 0
    assert "validate" in capsys.readouterr().out
    assert cli.run(["frobnicate"]) == 2
    assert cli.run(["build"]) == 2
    assert cli.run(["build", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert cli.run(["build", "msrvtt"]) == 2
    assert "has no builder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.run(["validate", "--help"])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        cli.run(["validate", "--annotations", "x.json", "--dataset", "nope"])
    assert info.value.code == 2
