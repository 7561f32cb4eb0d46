"""`gram-data prepare` on the 4 real clips: TFDS ArrayRecord parts, manifest, resume, read-back.

The prepared path must give the raw path's evaluation batches bit for bit (the stored frames and
filterbank slices are the evaluation-mode ones) and train through the same iterator interface.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest
from pipeline_fixtures import clip_dataset, small_config

from data_pipelines import pipeline, prepare, prepared_source
from data_pipelines.media import MediaError

pytestmark = pytest.mark.media


def _eval(config):
    return list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))


@pytest.fixture
def prepared(tmp_path):
    """The clips prepared in parts of 3 records (2 parts), plus the raw and prepared configs."""
    layout = clip_dataset(tmp_path)
    out = tmp_path / "prepared"
    raw = small_config(layout, num_frames=3, eval_batch_size=4)
    manifest = prepare.prepare_split(
        small_config(layout, num_frames=3, prepared_dir=str(out)),
        "test",
        out,
        records_per_part=3,
        progress=False,
    )
    return {
        "layout": layout,
        "out": out,
        "raw": raw,
        "prepared": small_config(layout, num_frames=3, eval_batch_size=4, prepared_dir=str(out)),
        "manifest": manifest,
    }


def test_manifest_counts_shapes_and_checksums(prepared):
    out, manifest = prepared["out"], prepared["manifest"]
    assert manifest == json.loads((out / "test" / "manifest.json").read_text())
    assert manifest["num_records"] == 4
    assert manifest["counts"] == {"present_video": 4, "present_audio": 4}
    assert manifest["shapes"] == {"video": [3, 32, 32, 3], "audio": [None, 1024, 64]}
    assert manifest["missing"] == {"video": [], "audio": []}
    assert [(p["start"], p["stop"]) for p in manifest["parts"]] == [(0, 3), (3, 4)]
    for part in manifest["parts"]:
        root = out / "test" / part["dir"] / prepared_source.BUILDER_NAME / "1.0.0"
        assert any(name.endswith("-00000-of-00001") for name in part["files"])  # ArrayRecord
        for name, digest in part["files"].items():
            assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest


def test_prepared_eval_equals_raw_eval_exactly(prepared):
    raw, prep = _eval(prepared["raw"]), _eval(prepared["prepared"])
    assert len(raw) == len(prep) == 2
    for a, b in zip(raw, prep, strict=True):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_prepared_training_shares_the_interface_and_restores(prepared):
    raw = small_config(prepared["layout"], num_frames=2, num_epochs=2)
    prep = small_config(
        prepared["layout"], num_frames=2, num_epochs=2, prepared_dir=str(prepared["out"])
    )
    raw_batch = next(
        pipeline.make_train_iterator(raw, process_index=0, process_count=1, split="test")
    )
    it = pipeline.make_train_iterator(prep, process_index=0, process_count=1, split="test")
    batches = [next(it) for _ in range(3)]
    for key in raw_batch:  # the same keys, dtypes and shapes as the raw path
        assert batches[0][key].dtype == raw_batch[key].dtype
        assert batches[0][key].shape == raw_batch[key].shape, key
    # The same samples in the same order as raw training (the plan does not depend on the source).
    np.testing.assert_array_equal(batches[0]["index"], raw_batch["index"])
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    restored = pipeline.make_train_iterator(prep, process_index=0, process_count=1, split="test")
    restored.set_state(state)
    for a in expected:
        b = next(restored)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_interrupted_prepare_resumes_at_the_unfinished_part(tmp_path, monkeypatch):
    layout = clip_dataset(tmp_path)
    out = tmp_path / "prepared"
    config = small_config(
        layout, num_frames=2, modalities=("video", "audio"), prepared_dir=str(out)
    )
    real_decode = prepare._decode_record

    def interrupt_at_record_3(job, spec):
        if job["index"] == 3:
            raise KeyboardInterrupt  # as a user's Ctrl-C in the middle of part 1
        return real_decode(job, spec)

    monkeypatch.setattr(prepare, "_decode_record", interrupt_at_record_3)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_split(config, "test", out, records_per_part=2, progress=False)
    monkeypatch.setattr(prepare, "_decode_record", real_decode)
    split = out / "test"
    assert (split / "part-00000" / "DONE.json").is_file()
    assert not (split / "part-00001" / "DONE.json").exists()
    with pytest.raises(FileNotFoundError, match="manifest"):
        pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1)
    part0 = split / "part-00000" / prepared_source.BUILDER_NAME / "1.0.0"
    before = {p.name: p.stat().st_mtime_ns for p in part0.iterdir()}

    decoded = []

    def count(job, spec):
        decoded.append(job["id"])
        return real_decode(job, spec)

    monkeypatch.setattr(prepare, "_decode_record", count)
    manifest = prepare.prepare_split(config, "test", out, records_per_part=2, progress=False)
    assert decoded == ["video3", "video4"]  # part 0 was kept
    assert {p.name: p.stat().st_mtime_ns for p in part0.iterdir()} == before
    assert manifest["counts"] == {"present_video": 4, "present_audio": 4}
    batches = list(
        pipeline.make_eval_iterator(
            small_config(layout, num_frames=2, eval_batch_size=4, prepared_dir=str(out)),
            "test",
            process_index=0,
            process_count=1,
        )
    )
    assert batches[0]["index"].tolist() == [0, 0, 1, 1] and batches[0]["present_video"].all()


def test_bad_media_recorded_then_policy_applies(tmp_path):
    layout = clip_dataset(tmp_path)
    audio_dir = pathlib.Path(layout["audio_dir"])
    (audio_dir / "video2.mp3").unlink()
    out = tmp_path / "prepared"
    argv = ["--annotations", layout["annotations"]["test"], "--split", "test"]
    argv += ["--video-dir", layout["video_dir"], "--audio-dir", str(audio_dir), "--out", str(out)]
    argv += ["--num-frames", "2", "--image-size", "32", "--no-progress"]
    assert prepare.main(argv) == 0
    manifest = prepared_source.read_manifest(out, "test")
    assert manifest["missing"] == {"video": [], "audio": ["video2"]}
    assert "video2" in manifest["errors"]["audio"]["video2"]
    skipping = small_config(layout, eval_batch_size=8, prepared_dir=str(out), bad_data="skip")
    (batch,) = _eval(skipping)
    assert batch["present_audio"].tolist() == [True, True, False, False, True, True, True, True]
    raising = small_config(layout, eval_batch_size=8, prepared_dir=str(out))
    with pytest.raises(MediaError, match="video2"):
        _eval(raising)
    # The reference's audio filter reads availability from the manifest.
    filtered = small_config(layout, eval_batch_size=8, prepared_dir=str(out), filter_audio=True)
    (batch,) = _eval(filtered)
    assert batch["index"][batch["valid"]].tolist() == [0, 0, 2, 2, 3, 3]


def test_settings_that_differ_from_the_prepared_ones_are_refused(prepared):
    config = small_config(
        prepared["layout"], num_frames=3, image_size=48, prepared_dir=str(prepared["out"])
    )
    with pytest.raises(ValueError, match=r"spec.image_size' is 32 but the data config has 48"):
        pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1)
    more_frames = small_config(prepared["layout"], num_frames=4, prepared_dir=str(prepared["out"]))
    with pytest.raises(ValueError, match="spec.num_frames"):
        pipeline.make_eval_iterator(more_frames, "test", process_index=0, process_count=1)


def test_jpeg_frames_are_smaller_and_close_to_raw(prepared, tmp_path):
    out = tmp_path / "jpeg"
    layout = prepared["layout"]
    manifest = prepare.prepare_split(
        small_config(layout, num_frames=3, prepared_dir=str(out)),
        "test",
        out,
        progress=False,
        frame_format="jpeg",
        jpeg_quality=90,
    )
    assert manifest["spec"]["frame_format"] == "jpeg"
    assert manifest["bytes"] < prepared["manifest"]["bytes"]
    jpeg = _eval(small_config(layout, num_frames=3, eval_batch_size=4, prepared_dir=str(out)))
    for a, b in zip(_eval(prepared["raw"]), jpeg, strict=True):
        np.testing.assert_array_equal(a["audio"], b["audio"])
        assert b["video"].dtype == np.uint8 and b["video"].shape == a["video"].shape
        error = np.abs(a["video"].astype(np.int16) - b["video"]).mean()
        assert 0 < error < 3.0  # lossy, but close: mean absolute error in 8-bit levels
