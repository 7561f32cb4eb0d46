"""Audio extraction to the released layout, and the two evaluation protocols on real clips.

The 4 reference clips (real H.264 + AAC videos) are copied to a temp folder, with clip 3 replaced
by a real H.264 video without an audio stream. ``gram-data extract-audio`` writes
``<stem>.mp3`` for the 3 clips with audio and counts the other; then ``config.protocol`` decides
what the evaluation sees: ``released_audio_filtered`` 3 items (the clip without audio dropped, as
the released code drops MSR-VTT's 116 of 1,000), ``standard_1ka`` all 4 (its audio marked
absent).
"""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
from media_fixtures import write_index_video

from data_pipelines import extract_audio, pipeline, samples
from data_pipelines.cli import run as gram_data
from data_pipelines.media import audio as media_audio
from experiments.paper import finetune_tva
from gram_jax.config import prepare
from gram_jax.evaluators.base import Collected
from gram_jax.evaluators.retrieval import RetrievalLayout

pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def clips(reference_data, tmp_path_factory):
    """(video dir, audio dir): the clips with clip 3 silent, audio extracted by the command."""
    root = tmp_path_factory.mktemp("clips")
    videos = root / "videos"
    videos.mkdir()
    for i in (1, 2, 4):
        shutil.copy(reference_data / "media" / "videos" / f"video{i}.mp4", videos)
    write_index_video(videos / "video3.mp4", 12)
    return videos, root / "audios"


def test_extract_audio_writes_the_released_layout(clips, capsys):
    videos, audios = clips
    assert gram_data(["extract-audio", "--video-dir", str(videos), "--audio-dir", str(audios)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"extract-audio: 4 videos -> {audios}: 3 written, 0 already there, 1 without an audio "
        "stream (no file), 0 failed; no audio: video3"
    )
    assert sorted(p.name for p in audios.iterdir()) == ["video1.mp3", "video2.mp3", "video4.mp3"]
    for i in (1, 2, 4):
        with av.open(str(audios / f"video{i}.mp3")) as container:
            stream = container.streams.audio[0]
            assert (stream.codec_context.name, stream.rate, stream.channels) == (
                "mp3float",
                16000,
                1,
            )
        # The same samples the pipeline reads from the video itself, up to the MP3 coding.
        wave = media_audio.load_waveform(audios / f"video{i}.mp3")
        direct = media_audio.load_waveform(videos / f"video{i}.mp4")
        assert abs(len(wave) - len(direct)) < 0.01 * len(direct)
        n = min(len(wave), len(direct))
        assert np.corrcoef(wave[:n], direct[:n])[0, 1] > 0.9
    # A rerun keeps the files; a broken video is counted apart and sets the exit status.
    (videos / "broken.mp4").write_bytes(b"\x00" * 256)
    try:
        summary = extract_audio.extract_audio(videos, audios)
    finally:
        (videos / "broken.mp4").unlink()
    assert (summary.videos, len(summary.existing), summary.no_audio) == (5, 3, ["video3"])
    assert list(summary.failed) == ["broken"] and "FFmpeg cannot open" in summary.failed["broken"]


def _prepared(protocol: str, videos, audios):
    config = finetune_tva.get_config("msrvtt,runlocal")
    config.data.video_dir = str(videos)
    config.data.audio_dir = str(audios)
    config.data.audio_prefix = "video"  # the extracted files are named by the video stem
    config.protocol = protocol
    return prepare(config, count_data=False)


def _evaluated_items(config) -> tuple[int, int, int]:
    """(records read, data items scored, queries) of the config's retrieval evaluator."""
    split = samples.load_split(config.data, "test")
    index, caption, present = [], [], {"audio": [], "text": []}
    for batch in pipeline.make_eval_iterator(config.data, "test", process_index=0, process_count=1):
        valid = np.asarray(batch["valid"])
        index.append(np.asarray(batch["index"])[valid])
        caption.append(np.asarray(batch["caption_index"])[valid])
        for m in present:
            present[m].append(np.asarray(batch[f"present_{m}"])[valid])
    col = Collected(
        embeddings={},
        present={m: np.concatenate(v) for m, v in present.items()},
        index=np.concatenate(index),
        caption_index=np.concatenate(caption),
        label=None,
    )
    ev = config.evals.reference_clips
    layout = RetrievalLayout.from_collected(
        col, "text", require=tuple(ev.require), captions=ev.captions
    )
    return split.num_records, len(layout.data_rows), len(layout.text_rows)


def test_protocols_count_the_clip_without_audio(clips):
    videos, audios = clips
    if not audios.is_dir():
        extract_audio.extract_audio(videos, audios)
    released = _prepared("released_audio_filtered", videos, audios)
    standard = _prepared("standard_1ka", videos, audios)
    assert (released.data.filter_audio, released.data.bad_data) == (True, "raise")
    assert (standard.data.filter_audio, standard.data.bad_data) == (False, "skip")
    assert tuple(released.evals.reference_clips.require) == ("audio",)
    assert tuple(standard.evals.reference_clips.require) == ()
    assert _evaluated_items(released) == (3, 3, 3)
    assert _evaluated_items(standard) == (4, 4, 4)


def test_filter_audio_drops_a_file_without_an_audio_stream(clips):
    """A file named like audio that holds none (a silent video) is dropped and counted, not
    mistaken for audio because it exists."""
    videos, audios = clips
    if not audios.is_dir():
        extract_audio.extract_audio(videos, audios)
    fake = audios / "video3.mp3"
    shutil.copy(videos / "video3.mp4", fake)
    try:
        released = _prepared("released_audio_filtered", videos, audios)
        split = samples.load_split(released.data, "test")
        assert split.ids == ["1", "2", "4"]
    finally:
        fake.unlink()
