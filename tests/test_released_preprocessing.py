"""The released code's preprocessing, selected by data config keys, on the real reference data.

- ``empty_text_policy``: empty subtitles of the real MSR-VTT test annotation (238 of 1000) are
  absent by default and ``[CLS][SEP]`` with ``'encode'``, as the released code feeds them.
- ``frame_transform='released'``: torchvision 0.15 semantics on float frames (bilinear without
  anti-aliasing, resize then centre crop, RandomResizedCrop over the full frame), checked against
  torch / torchvision themselves on frames decoded from the four real clips, to <= 1/255.
- ``audio.padding='reference'``: the released padding rule, on hand-computed lengths and on the
  real clips (a 4.4 s clip with DiDeMo's two slices gets an all-zero second slice).
"""

from __future__ import annotations

import pathlib

import av
import numpy as np
import pytest
from absl import flags

from data_pipelines import pipeline
from data_pipelines.config import data_config
from data_pipelines.media import audio as media_audio
from data_pipelines.media import frame_resize
from data_pipelines.media import video as media_video
from data_pipelines.reference_media import REFERENCE_DATA_DIR as REFERENCE_DATA

torch = pytest.importorskip("torch")
tv_transforms = pytest.importorskip("torchvision.transforms")
tv_functional = pytest.importorskip("torchvision.transforms.functional")

pytestmark = pytest.mark.media

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

CLIPS = [REFERENCE_DATA / "media" / "videos" / f"video{i}.mp4" for i in range(1, 5)]


# --- row 1: empty subtitles -----------------------------------------------------------------


def _subtitle_rows(policy: str) -> dict[str, np.ndarray]:
    config = data_config(
        dataset="msrvtt",
        annotations={"test": str(REFERENCE_DATA / "annotations/msrvtt/descs_ret_test.json")},
        modalities=("text", "subtitle"),
        caption_mode="first",
        eval_batch_size=250,
        empty_text_policy=policy,
    )
    batches = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    keys = ("index", "present_subtitle", "subtitle_ids", "subtitle_mask")
    return {k: np.concatenate([b[k][b["valid"]] for b in batches]) for k in keys}


def test_empty_subtitles_are_absent_or_encoded_as_cls_sep():
    absent, encoded = _subtitle_rows("absent"), _subtitle_rows("encode")
    assert absent["index"].tolist() == encoded["index"].tolist() == list(range(1000))
    empty = ~absent["present_subtitle"]
    assert int(empty.sum()) == 238  # the annotation's empty subtitles
    assert not absent["subtitle_mask"][empty].any()
    assert encoded["present_subtitle"].all()
    # [CLS]=101 [SEP]=102 then padding, the same row for all 238 (one constant vector upstream).
    cls_sep = np.zeros(70, np.int32)
    cls_sep[:2] = (101, 102)
    np.testing.assert_array_equal(encoded["subtitle_ids"][empty], np.tile(cls_sep, (238, 1)))
    assert (encoded["subtitle_mask"][empty].sum(axis=1) == 2).all()
    # Non-empty subtitles are tokenized identically under both policies.
    for key in ("subtitle_ids", "subtitle_mask"):
        np.testing.assert_array_equal(encoded[key][~empty], absent[key][~empty])
    with pytest.raises(ValueError, match="empty_text_policy"):
        data_config(empty_text_policy="drop")


# --- row 6: frames ----------------------------------------------------------------------------


def _decoded_frames(path: pathlib.Path, num_frames: int) -> np.ndarray:
    """uint8[n, H, W, 3]: the evaluation frames of ``path``, decoded with PyAV directly."""
    with av.open(str(path)) as container:
        rgb = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    chosen = media_video.sample_frame_indices(len(rgb), num_frames, train=False, rng=None)
    return np.stack([rgb[i] for i in chosen])


def _as_torch(frames: np.ndarray):
    """float64[n, 3, H, W] in [0, 1], as the released loader builds it (numpy / 255.0)."""
    return torch.from_numpy(frames.transpose(0, 3, 1, 2) / 255.0)


def _from_torch(tensor) -> np.ndarray:
    return tensor.numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    return [_decoded_frames(path, 2) for path in CLIPS]


def test_bilinear_resize_equals_torch_interpolate_without_antialias(real_frames):
    for frames in real_frames:
        for height, width in [(224, 224), (32, 32), (100, 57), (57, 100), (700, 400)]:
            expected = torch.nn.functional.interpolate(
                torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float64)),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
                antialias=False,
            )
            ours = np.stack([frame_resize.bilinear_resize(f, height, width) for f in frames])
            np.testing.assert_allclose(ours, _from_torch(expected), rtol=0, atol=1e-9)


@pytest.mark.parametrize("resize", ["crop_flip", "resize"])
def test_released_evaluation_frames_match_torchvision(resize, real_frames):
    size = 224
    if resize == "crop_flip":
        reference = tv_transforms.Compose(
            [tv_transforms.Resize(size, antialias=False), tv_transforms.CenterCrop(size)]
        )
    else:
        reference = tv_transforms.Resize((size, size), antialias=False)
    worst = 0.0
    for path, frames in zip(CLIPS, real_frames, strict=True):
        expected = _from_torch(reference(_as_torch(frames)))
        ours = media_video.load_frames(
            path, num_frames=2, train=False, size=size, resize=resize, transform="released"
        )
        assert ours.shape == expected.shape == (2, size, size, 3)
        worst = max(worst, float(np.abs(ours / 255.0 - expected).max()))
    assert worst <= 0.5 / 255 + 1e-9  # only the rounding to uint8 levels
    # The default anti-aliased resize differs a lot at this 2.9x downscale (640x360 portrait).
    default = media_video.load_frames(CLIPS[0], num_frames=2, train=False, size=size, resize=resize)
    released = media_video.load_frames(
        CLIPS[0], num_frames=2, train=False, size=size, resize=resize, transform="released"
    )
    assert np.abs(default.astype(float) - released).mean() > 1.0


def test_released_training_crop_matches_torchvision(real_frames):
    size = 224
    height, width = real_frames[0].shape[1:3]  # 640 x 360: no 80-100 % square fits
    centre = ((height - width) // 2, 0, width, width)
    crop = tv_transforms.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(1.0, 1.0))
    flips = set()
    for seed in range(6):
        torch.manual_seed(seed)
        image = _as_torch(real_frames[0][:1])
        assert crop.get_params(image, crop.scale, crop.ratio) == centre
        plan = frame_resize.released_plan(
            height,
            width,
            size=size,
            resize="crop_flip",
            train=True,
            rng=np.random.default_rng(seed),
        )
        assert plan.box == centre
        flips.add(plan.flip)
        for frames in real_frames:
            expected = tv_functional.resized_crop(
                _as_torch(frames), *plan.box, [size, size], antialias=False
            )
            if plan.flip:
                expected = tv_functional.hflip(expected)
            ours = np.stack([frame_resize.apply_plan(f, plan, size) for f in frames])
            assert np.abs(ours / 255.0 - _from_torch(expected)).max() <= 0.5 / 255 + 1e-9
    assert flips == {True, False}
    # Near-square frames (aspect < 1.25): a random square of 80-100 % of the frame's area, drawn
    # like torchvision's (compared by the distribution of the side over 2000 draws).
    rng = np.random.default_rng(0)
    ours = [
        frame_resize.released_plan(300, 320, size=size, resize="crop_flip", train=True, rng=rng)
        for _ in range(2000)
    ]
    torch.manual_seed(0)
    theirs = [
        crop.get_params(torch.zeros(3, 300, 320), crop.scale, crop.ratio) for _ in range(2000)
    ]
    our_sides = np.array([p.box[2] for p in ours])
    their_sides = np.array([box[2] for box in theirs])
    assert all(p.box[2] == p.box[3] and p.box[0] + p.box[2] <= 300 for p in ours)
    assert our_sides.min() >= 277 and their_sides.min() >= 277  # round(sqrt(0.8 * 300 * 320))
    assert abs(our_sides.mean() - their_sides.mean()) < 1.0
    assert abs((our_sides == 300).mean() - (their_sides == 300).mean()) < 0.03  # fallbacks


def test_frame_transform_key_reaches_the_pipeline():
    media = REFERENCE_DATA / "media"
    with pytest.raises(ValueError, match="frame_transform"):
        data_config(frame_transform="torch")
    with pytest.raises(ValueError, match="prepared_dir"):
        data_config(frame_transform="released", prepared_dir="/nonexistent")
    config = data_config(
        dataset="reference_clips",
        annotations={"test": str(media / "annotations.json")},
        video_dir=str(media / "videos"),
        modalities=("video", "text"),
        num_frames=2,
        image_size=32,
        eval_batch_size=4,
        frame_transform="released",
    )
    (batch,) = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    for row, path in enumerate(CLIPS):
        expected = media_video.load_frames(
            path, num_frames=2, train=False, size=32, transform="released"
        )
        np.testing.assert_array_equal(batch["video"][row], expected)
    default = media_video.load_frames(CLIPS[0], num_frames=2, train=False, size=32)
    assert np.abs(default.astype(float) - batch["video"][0]).mean() > 1.0


# --- row 8: audio padding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "clips", "reference", "fixed"),
    [
        (1024, 1, 1024, 0),  # a multiple of T: the released rule adds a whole zero slice
        (2048, 2, 1024, 0),
        (1500, 2, 548, 548),
        (3000, 1, 72, 72),
        (442, 2, 1606, 582),  # shorter than n slices: padded up to n slices (one all zeros)
        (0, 1, 1024, 1024),
    ],
)
def test_padding_rules(length, clips, reference, fixed):
    def pad(mode):
        return media_audio.padding_frames(length, num_clips=clips, target_length=1024, mode=mode)

    assert (pad("reference"), pad("fixed")) == (reference, fixed)


def test_reference_padding_on_real_clips():
    audio1 = REFERENCE_DATA / "media" / "audios" / "audio1.mp3"  # 4.4 s: 442 filterbank frames
    kwargs = dict(num_clips=2, train=False)
    released = media_audio.load_fbank_slices(audio1, padding="reference", **kwargs)
    fixed = media_audio.load_fbank_slices(audio1, **kwargs)
    assert released.shape == fixed.shape == (2, 1024, 64)
    np.testing.assert_array_equal(released[0], fixed[0])
    assert released[0, :442].std() > 0.1 and not released[0, 442:].any()
    assert not released[1].any()  # DiDeMo's second slice of a short clip is all padding
    np.testing.assert_array_equal(fixed[1], fixed[0])  # ours reuses the real slice


# --- the fidelity switch sets the data rows ---------------------------------------------------


@pytest.mark.parametrize(
    ("fidelity", "expected"),
    [
        ("released", ("encode", "released", "reference")),
        ("improved", ("absent", "antialias", "fixed")),
    ],
)
def test_fidelity_switch_sets_the_data_rows(fidelity, expected):
    from gram_jax.config.fidelity import apply_fidelity
    from gram_jax.config.loading import load_config

    config = load_config("experiments/paper/finetune_tva.py:msrvtt")
    config.fidelity = fidelity
    apply_fidelity(config)
    d = config.data
    assert (d.empty_text_policy, d.frame_transform, d.audio.padding) == expected
    assert d.audio_prefix is None  # row 5: the released <id>.mp3 under both
