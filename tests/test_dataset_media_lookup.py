"""Media lookup through the dataset layouts, and the audio.backend switch, on the real clips.

The real DiDeMo and AudioCaps annotation records are written into tmp_path with the 4 real clips
linked under the names those datasets use on disk: DiDeMo audio ``<id>.mp3`` (the released
code's name; ``audio_<id>.mp3`` under the older upstream name, read with the data config key
``audio_prefix='audio_'``), AudioCaps ``<id up to the first dot>``. A decoy file shows that the
layout's name, not some other spelling, is what the pipeline looks up (in the media reader and in
the ``filter_audio`` filter).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from data_pipelines import pipeline, samples
from data_pipelines.config import AUDIO_BACKENDS, data_config
from data_pipelines.media import MediaError
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video

pytestmark = pytest.mark.media

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _real_records(reference_data: pathlib.Path, dataset: str, n: int) -> list[dict]:
    path = reference_data / "annotations" / dataset / "descs_ret_test.json"
    return json.loads(path.read_text())[:n]


def _link(link: pathlib.Path, target: pathlib.Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


@pytest.fixture
def didemo(tmp_path, reference_data):
    """4 real DiDeMo test records; record k <-> real clip k+1.

    Records 0-2 have ``<id>.mp3`` (the released naming); record 3 only ``audio_<id>.mp3`` (the
    older upstream naming), which the default DiDeMo layout must not find.
    """
    records = _real_records(reference_data, "didemo", 4)
    ann = tmp_path / "didemo_test.json"
    ann.write_text(json.dumps(records))
    clips = reference_data / "media"
    for k, record in enumerate(records):
        vid = record["video_id"]
        _link(tmp_path / "videos" / f"{vid}.mp4", clips / "videos" / f"video{k + 1}.mp4")
        audio_name = f"{vid}.mp3" if k < 3 else f"audio_{vid}.mp3"
        _link(tmp_path / "audios" / audio_name, clips / "audios" / f"audio{k + 1}.mp3")
    overrides = {
        "dataset": "didemo",
        "annotations": {"test": str(ann)},
        "video_dir": str(tmp_path / "videos"),
        "audio_dir": str(tmp_path / "audios"),
        "num_frames": 2,
        "image_size": 32,
        "resize": "resize",  # DiDeMo's reference transform
        "audio": {"num_clips": 2},  # DiDeMo's two slices
        "eval_batch_size": 4,
    }
    return records, overrides


def test_didemo_audio_is_found_under_its_layout_name(didemo, reference_data):
    records, overrides = didemo
    split = samples.load_split(data_config(**overrides, bad_data="skip"), "test")
    audios = [None if p is None else pathlib.Path(p).name for p in split.media_paths["audio"]]
    ids = [r["video_id"] for r in records]
    assert audios == [f"{i}.mp3" for i in ids[:3]] + [None]  # the old name is not found
    assert all(p is not None for p in split.media_paths["video"])
    # The reference's audio filter asks the layout too: the old-name record is dropped ...
    kept = samples.load_split(data_config(**overrides, filter_audio=True), "test")
    assert kept.ids == ids[:3] and kept.positions.tolist() == [0, 1, 2]
    # ... while audio_prefix='audio_' (the older naming) sees only that one.
    old = samples.load_split(
        data_config(**overrides, filter_audio=True, audio_prefix="audio_"), "test"
    )
    assert old.ids == ids[3:] and old.positions.tolist() == [3]
    assert pathlib.Path(old.media_paths["audio"][0]).name == f"audio_{ids[3]}.mp3"


def test_gram_data_validate_keeps_didemo_records_with_released_audio_names(didemo, tmp_path):
    """``gram-data validate`` on the DiDeMo layout with ``<id>.mp3`` audio: no record is lost."""
    records, overrides = didemo
    last = records[3]["video_id"]
    audios = pathlib.Path(overrides["audio_dir"])
    (audios / f"audio_{last}.mp3").rename(audios / f"{last}.mp3")  # all four: released names
    command = [sys.executable, "-m", "data_pipelines.cli", "validate", "--dataset", "didemo"]
    command += ["--annotations", overrides["annotations"]["test"], "--mode", "probe"]
    command += ["--video-dir", overrides["video_dir"], "--audio-dir", str(audios)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(
        "4 records, 4 distinct videos, 4 captions, 4 audio files, 4 video files checked: "
        "no problems"
    )
    # The reference's audio filter (filter_audio) keeps all four as well.
    kept = samples.load_split(data_config(**overrides, filter_audio=True), "test")
    assert kept.ids == [r["video_id"] for r in records]
    # The older name is reported missing for every record unless audio_prefix says so.
    (audios / f"{last}.mp3").rename(audios / f"audio_{last}.mp3")
    done = subprocess.run(
        [*command, "--audio-prefix", "audio_"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and done.stdout.count("BAD missing_audio") == 3, done.stdout


def test_didemo_missing_audio_names_the_layout_stem(didemo):
    records, overrides = didemo
    config = data_config(**overrides, modalities=("audio",))
    with pytest.raises(
        MediaError, match=rf"1 of 4 .*stems looked for: \['{records[3]['video_id']}'"
    ):
        samples.load_split(config, "test")


def test_didemo_eval_batch_decodes_the_right_clips(didemo, reference_data):
    records, overrides = didemo
    config = data_config(**overrides, filter_audio=True)
    (batch,) = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    assert batch["valid"].tolist() == [True, True, True, False]
    assert batch["index"].tolist() == [0, 1, 2, -1]
    assert batch["audio"].shape == (4, 2, 1024, 64)
    for row in range(3):
        clip = row + 1
        audio = media_audio.load_fbank_slices(
            reference_data / "media" / "audios" / f"audio{clip}.mp3", num_clips=2, train=False
        )
        np.testing.assert_array_equal(batch["audio"][row], audio)
        frames = media_video.load_frames(
            reference_data / "media" / "videos" / f"video{clip}.mp4",
            num_frames=2,
            train=False,
            size=32,
            resize="resize",
        )
        np.testing.assert_array_equal(batch["video"][row], frames)
    assert batch["present_audio"].tolist() == [True] * 3 + [False]


def test_audiocaps_media_use_the_id_up_to_the_first_dot(tmp_path, reference_data):
    records = _real_records(reference_data, "audiocaps", 3)
    ann = tmp_path / "audiocaps_test.json"
    ann.write_text(json.dumps(records))
    ids = [r["video_id"] for r in records]
    stems = [i.split(".")[0] for i in ids]
    assert all(stem != i for stem, i in zip(stems, ids, strict=True))  # e.g. X_100.000_110.000
    clips = reference_data / "media"
    for k in range(3):
        _link(tmp_path / "videos" / f"{stems[k]}.mp4", clips / "videos" / f"video{k + 1}.mp4")
    # Records 0-1 under the AudioCaps name; record 2 only under its full id (not found).
    for k in range(2):
        _link(tmp_path / "audios" / f"{stems[k]}.mp3", clips / "audios" / f"audio{k + 1}.mp3")
    _link(tmp_path / "audios" / f"{ids[2]}.mp3", clips / "audios" / "audio3.mp3")
    overrides = dict(
        dataset="audiocaps",
        annotations={"test": str(ann)},
        video_dir=str(tmp_path / "videos"),
        audio_dir=str(tmp_path / "audios"),
        caption_mode="first",
    )
    split = samples.load_split(data_config(**overrides, filter_audio=True), "test")
    assert split.ids == ids[:2]
    assert [pathlib.Path(p).name for p in split.media_paths["video"]] == [
        f"{s}.mp4" for s in stems[:2]
    ]
    assert [pathlib.Path(p).name for p in split.media_paths["audio"]] == [
        f"{s}.mp3" for s in stems[:2]
    ]
    assert samples.media_stem("audiocaps", ids[0], "audio") == stems[0]
    assert samples.find_record_media("audiocaps", ids[2], "audio", tmp_path / "audios") is None
    found = samples.find_record_media(None, ids[2], "audio", tmp_path / "audios")
    assert pathlib.Path(found).name == f"{ids[2]}.mp3"


def test_audio_backend_is_validated_and_passed_to_the_filterbank(tmp_path, reference_data):
    assert AUDIO_BACKENDS == media_audio.FBANK_BACKENDS
    with pytest.raises(ValueError, match=r"'audio.backend'.*'torch'"):
        data_config(audio=dict(backend="torch"))
    records = [{"video_id": "clip", "desc": "A dog is barking"}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    _link(tmp_path / "audios" / "clip.mp3", reference_data / "media" / "audios" / "audio1.mp3")
    base = dict(
        dataset=None,
        annotations={"test": str(ann)},
        audio_dir=str(tmp_path / "audios"),
        modalities=("audio",),
        eval_batch_size=1,
    )

    def audio_of(**audio):
        config = data_config(**base, audio=audio)
        (batch,) = list(
            pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1)
        )
        return batch["audio"][0]

    native, numpy_ = audio_of(backend="kaldi_native"), audio_of(backend="numpy")
    # Two implementations of one definition: float32 C++ against float64 NumPy.
    assert not np.array_equal(native, numpy_)
    np.testing.assert_allclose(native, numpy_, atol=2e-3)
    np.testing.assert_array_equal(audio_of(backend="auto"), native)
    # 128 bins at 16 kHz: kaldi-native-fbank refuses, 'auto' falls back to NumPy.
    np.testing.assert_array_equal(
        audio_of(backend="auto", mel_bins=128), audio_of(backend="numpy", mel_bins=128)
    )
    with pytest.raises(ValueError, match="refuses mel_bins=128.*'numpy' or 'auto'"):
        audio_of(backend="kaldi_native", mel_bins=128)
