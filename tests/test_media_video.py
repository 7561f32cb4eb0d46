"""Video decoding: frame choice, transforms, the real clips, and broken files (PyAV)."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
from media_fixtures import level_to_index, sine, write_audio, write_index_video

from data_pipelines.media import MediaError, video

pytestmark = pytest.mark.media

REAL_FRAMES = {1: 131, 2: 442, 3: 173, 4: 202}  # h264 360x640, 30 fps (counted by full decode)


def reference_eval_indices(total: int, n: int) -> list[int]:
    """The released code's evaluation rule: middle ``seg[(len + 1) // 2 - 1]`` of each segment."""
    segments = np.array_split(np.arange(total), n)
    return [int(s[(len(s) + 1) // 2 - 1]) for s in segments]


def test_eval_indices_follow_the_reference_rule():
    for total, n in [(131, 8), (442, 8), (8, 8), (37, 4), (9, 2)]:
        got = video.sample_frame_indices(total, n, train=False, rng=None)
        assert got.tolist() == reference_eval_indices(total, n)


def test_train_indices_one_per_segment_and_seeded():
    total, n = 100, 8
    segments = np.array_split(np.arange(total), n)
    draws = [
        video.sample_frame_indices(total, n, train=True, rng=np.random.default_rng(s))
        for s in range(50)
    ]
    for d in draws:
        assert all(int(i) in seg for i, seg in zip(d, segments, strict=True))
    again = video.sample_frame_indices(total, n, train=True, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again, draws[3])
    # Every frame of a 13-frame segment is reachable, not only a few.
    assert len({int(d[0]) for d in draws}) >= 8


def test_fewer_frames_than_requested_repeat_uniformly():
    got = video.sample_frame_indices(3, 8, train=False, rng=None)
    assert got.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="at least one frame"):
        video.sample_frame_indices(0, 8, train=False, rng=None)
    with pytest.raises(ValueError, match="rng"):
        video.sample_frame_indices(10, 2, train=True, rng=None)


@pytest.mark.parametrize("total", [37, 5])
def test_decoded_frames_are_the_selected_ones(tmp_path, total):
    """Lossless H.264 (B-frames) whose grey level encodes the frame index."""
    path = write_index_video(tmp_path / "index.mp4", total)
    frames = video.load_frames(path, num_frames=8, train=False, size=32, resize="resize")
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    expected = video.sample_frame_indices(total, 8, train=False, rng=None)
    np.testing.assert_array_equal(level_to_index(frames), expected)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    train = video.load_frames(path, num_frames=8, train=True, rng=rng_a, size=32)
    drawn = video.sample_frame_indices(total, 8, train=True, rng=rng_b)
    np.testing.assert_array_equal(level_to_index(train), drawn)


def _asymmetric_clip(tmp_path):
    """A 4-frame clip, 96x64, left half dark and right half bright."""
    path = tmp_path / "lr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.options = {"qp": "0"}
        img = np.zeros((64, 96, 3), np.uint8)
        img[:, 48:] = 200
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_crop_flip_and_resize_geometry(tmp_path):
    path = _asymmetric_clip(tmp_path)
    # Evaluation crop_flip = centre square of the short side: columns 16..80 of 96 -> half/half.
    centre = video.load_frames(path, num_frames=2, train=False, size=32, resize="crop_flip")
    left, right = centre[0, :, :14].mean(), centre[0, :, 18:].mean()
    assert left < 20 and right > 180
    # Plain resize keeps the whole width: still dark left, bright right, no flip in evaluation.
    full = video.load_frames(path, num_frames=2, train=False, size=32, resize="resize")
    assert full[0, :, :14].mean() < 20 and full[0, :, 18:].mean() > 180
    # Training flips (the same way for every frame of the clip) in about half of the draws.
    flipped = 0
    for seed in range(16):
        frames = video.load_frames(
            path, num_frames=2, train=True, rng=np.random.default_rng(seed), size=32
        )
        is_flipped = frames[0, :, :8].mean() > frames[0, :, -8:].mean()
        assert (frames[1, :, :8].mean() > frames[1, :, -8:].mean()) == is_flipped
        flipped += is_flipped
    assert 2 <= flipped <= 14


def test_public_crop_box_and_transform_frame():
    # A 360x640 portrait frame, as the real clips: evaluation crop_flip = centre 360x360 square.
    box, flip = video.crop_box(640, 360, size=224, resize="crop_flip", train=False, rng=None)
    assert box == (140, 0, 360, 360) and flip is False
    assert video.crop_box(640, 360, size=224, resize="resize", train=True, rng=None) == (
        (0, 0, 640, 360),
        False,
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        (top, left, h, w), _ = video.crop_box(
            640, 360, size=224, resize="crop_flip", train=True, rng=rng
        )
        # A square covering 80-100 % of the short side's square area, inside the frame.
        assert h == w and round(np.sqrt(0.8) * 360) <= h <= 360
        assert 0 <= top <= 640 - h and 0 <= left <= 360 - w
    with pytest.raises(ValueError, match="resize"):
        video.crop_box(640, 360, size=224, resize="bogus", train=False, rng=None)
    # transform_frame: crop, resize to size x size, flip = reversed columns.
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, 48:] = 200
    box = (0, 16, 64, 64)
    plain = video.transform_frame(rgb, box, False, 32)
    flipped = video.transform_frame(rgb, box, True, 32)
    assert plain.shape == (32, 32, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    assert plain[:, :14].mean() < 20 and plain[:, 18:].mean() > 180


@pytest.mark.parametrize("clip", [1, 2, 3, 4])
def test_real_clips(reference_data, clip):
    path = reference_data / "media" / "videos" / f"video{clip}.mp4"
    assert video.count_frames(path) == REAL_FRAMES[clip]
    frames = video.load_frames(path, num_frames=8, train=False)
    assert frames.shape == (8, 224, 224, 3) and frames.dtype == np.uint8
    # Real content, not padding: frames vary and are not constant.
    assert frames.std() > 10
    np.testing.assert_array_equal(frames, video.load_frames(path, num_frames=8, train=False))
    resized = video.load_frames(
        path, num_frames=4, train=True, rng=np.random.default_rng(0), resize="resize"
    )
    assert resized.shape == (4, 224, 224, 3)


def test_real_clip_eval_frames_match_an_independent_decode(reference_data):
    """The middle frames equal the frames an independent full decode holds at those positions."""
    path = reference_data / "media" / "videos" / "video3.mp4"
    with av.open(str(path)) as container:
        # swscale's own resize, independent of the PIL path under test.
        small = [
            f.reformat(width=64, height=64, format="rgb24").to_ndarray().astype(np.float32)
            for f in container.decode(video=0)
        ]
    ours = video.load_frames(path, num_frames=8, train=False, size=64, resize="resize")
    chosen = reference_eval_indices(len(small), 8)
    for k in range(len(chosen)):
        errors = [np.abs(small[i] - ours[k]).mean() for i in chosen]
        assert errors[k] < 4.0 and errors[k] == min(errors)


def test_normalize_frames():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[1] = 255
    out = video.normalize_frames(frames)
    assert out.dtype == np.float32 and out.shape == frames.shape
    np.testing.assert_allclose(out[0, 0, 0], -video.CLIP_MEAN / video.CLIP_STD, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0, 0], (1 - video.CLIP_MEAN) / video.CLIP_STD, rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        video.normalize_frames(frames.astype(np.float32))


def test_broken_files_raise_media_error(tmp_path, reference_data):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        video.load_frames(empty, num_frames=2, train=False)
    with pytest.raises(MediaError, match="does not exist"):
        video.load_frames(tmp_path / "absent.mp4", num_frames=2, train=False)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MediaError, match="cannot open"):
        video.load_frames(garbage, num_frames=2, train=False)
    audio_only = write_audio(
        tmp_path / "tone.m4a", sine(440, 0.5, 16000)[None], rate=16000, codec="aac", layout="mono"
    )
    with pytest.raises(MediaError, match="no video stream"):
        video.load_frames(audio_only, num_frames=2, train=False)
    # Truncated real clips: moov-first (video1) decodes partially; moov-last (video2) cannot open.
    for clip, pattern in [(1, "truncated"), (2, "cannot open")]:
        src = reference_data / "media" / "videos" / f"video{clip}.mp4"
        cut = tmp_path / f"cut{clip}.mp4"
        data = src.read_bytes()
        cut.write_bytes(data[: len(data) // 3])
        with pytest.raises(MediaError, match=pattern) as info:
            video.load_frames(cut, num_frames=8, train=False)
        assert str(cut) in str(info.value)
    # A copy with another extension still decodes (the container is sniffed, not the name).
    renamed = tmp_path / "video1.avi"
    shutil.copy(reference_data / "media" / "videos" / "video1.mp4", renamed)
    assert video.load_frames(renamed, num_frames=2, train=False).shape == (2, 224, 224, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="resize"):
        video.load_frames("x.mp4", num_frames=2, train=False, resize="bogus")
    with pytest.raises(ValueError, match="rng"):
        video.load_frames("x.mp4", num_frames=2, train=True)
