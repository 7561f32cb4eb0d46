"""Video frames through PyAV (FFmpeg): uniform-segment sampling, one sequential decode per clip.

The released code (reference section 4.2) splits the frame indices ``0..T-1`` into ``n`` contiguous
segments with ``np.array_split``; training takes a uniformly random frame of each segment,
evaluation the "middle" frame ``seg[(len(seg) + 1) // 2 - 1]``. It reads each frame with an OpenCV
seek, which decodes from the previous key frame every time. Here the stream is decoded once, front
to back, and only the selected frames are converted to RGB.

Transforms (the same crop for every frame of a clip, as in the reference):
- ``crop_flip``: training takes a random square crop covering 80-100 % of the short side's square
  area (RandomResizedCrop(224, scale=(0.8, 1), ratio=(1, 1))) and flips it horizontally with
  probability 0.5; evaluation resizes the short side to ``size`` and centre-crops.
- ``resize``: both resize to ``size x size`` without keeping the aspect ratio.

The resampling (``transform``): ``'antialias'`` (default) resizes uint8 frames with PIL's bilinear
filter, which widens its support when shrinking (anti-aliased), and trains on squares of 80-100 %
of the short side's square; ``'released'`` reproduces the released code's torchvision 0.15 float
transforms (no anti-aliasing, resize-then-crop, random crops over the full frame's area), see
:mod:`data_pipelines.media.frame_resize`.

The model normalises on device (contracts.md); :func:`normalize_frames` is the host-side version.
"""

from __future__ import annotations

import os

import av
import numpy as np
from PIL import Image

from data_pipelines.media import MediaError, frame_resize

# CLIP's RGB statistics (pixel values in [0, 1]), used by EVA-CLIP and by the reference.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

RESIZE_MODES = ("crop_flip", "resize")
FRAME_TRANSFORMS = ("antialias", "released")


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """uint8[..., 3] RGB -> float32[..., 3]: ``(pixels / 255 - CLIP_MEAN) / CLIP_STD``."""
    if frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(
            f"normalize_frames expects uint8[..., 3] RGB frames, got {frames.dtype}{frames.shape}"
        )
    return (frames.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD


def sample_frame_indices(
    num_available: int, num_frames: int, *, train: bool, rng: np.random.Generator | None
) -> np.ndarray:
    """int64[num_frames] sorted frame indices in ``[0, num_available)``.

    ``num_available >= num_frames``: one index per ``np.array_split`` segment (random in training,
    the reference's middle frame in evaluation). ``num_available < num_frames``: the reference drops
    such clips and silently loads another sample; here the frames at ``num_frames`` uniform
    positions are used, so some repeat (deterministic in both modes).
    """
    if num_available <= 0:
        raise ValueError(f"a clip needs at least one frame, got num_available={num_available}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_available < num_frames:
        positions = (np.arange(num_frames) + 0.5) * num_available / num_frames
        return np.minimum(positions.astype(np.int64), num_available - 1)
    segments = np.array_split(np.arange(num_available), num_frames)
    if train:
        if rng is None:
            raise ValueError("training sampling needs rng (a numpy Generator)")
        return np.array([seg[rng.integers(len(seg))] for seg in segments], dtype=np.int64)
    return np.array([seg[(len(seg) + 1) // 2 - 1] for seg in segments], dtype=np.int64)


def crop_box(
    height: int, width: int, *, size: int, resize: str, train: bool, rng
) -> tuple[tuple[int, int, int, int], bool]:
    """The source region of a clip's frames and whether to flip them (one draw per clip).

    Args:
      height, width: the decoded frame size in pixels.
      size: output side (only the crop's randomness depends on it through the caller).
      resize: ``'crop_flip'`` or ``'resize'`` (module docstring).
      train: random crop + flip (``crop_flip`` only) or the deterministic evaluation box.
      rng: numpy Generator, drawn from in training with ``crop_flip`` (scale, top, left, flip).

    Returns:
      ``((top, left, crop_h, crop_w), flip)``: ints in pixels of the source frame, and a bool.
      Pass both to :func:`transform_frame` for every frame of the clip.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if resize == "resize":
        return (0, 0, height, width), False
    short = min(height, width)
    if train:
        # RandomResizedCrop with ratio (1, 1): a square whose area is 80-100 % of short**2.
        scale = rng.uniform(0.8, 1.0)
        side = max(1, min(short, int(round(np.sqrt(scale * short * short)))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        return (top, left, side, side), bool(rng.random() < 0.5)
    # Resize(size) on the short side then CenterCrop(size) == centre square of the short side.
    top = (height - short) // 2
    left = (width - short) // 2
    return (top, left, short, short), False


def transform_frame(rgb: np.ndarray, box, flip: bool, size: int) -> np.ndarray:
    """uint8[size, size, 3]: ``rgb`` (uint8[H, W, 3]) cropped to ``box``, resized, maybe flipped.

    ``box`` and ``flip`` come from :func:`crop_box`; the resize is PIL bilinear with antialiasing.
    """
    top, left, crop_h, crop_w = box
    region = rgb[top : top + crop_h, left : left + crop_w]
    if region.shape[:2] != (size, size):
        # PIL's bilinear filter widens its support when shrinking (anti-aliased, like
        # torchvision's Resize(antialias=True) on tensors).
        region = np.asarray(
            Image.fromarray(np.ascontiguousarray(region)).resize((size, size), Image.BILINEAR)
        )
    if flip:
        region = region[:, ::-1]
    return np.ascontiguousarray(region)


def clip_transform(
    height: int, width: int, *, size: int, resize: str, transform: str, train: bool, rng
):
    """The frame transform of one H x W clip: uint8[H, W, 3] -> uint8[size, size, 3].

    Draws the clip's crop and flip once (from ``rng`` in training with ``crop_flip``), so the
    returned function applies the same geometry to every frame. ``transform`` picks the
    implementation: ``'antialias'`` (:func:`crop_box` + :func:`transform_frame`) or
    ``'released'`` (:func:`frame_resize.released_plan` + :func:`frame_resize.apply_plan`).
    """
    if transform == "released":
        plan = frame_resize.released_plan(
            height, width, size=size, resize=resize, train=train, rng=rng
        )
        return lambda rgb: frame_resize.apply_plan(rgb, plan, size)
    if transform != "antialias":
        raise ValueError(f"transform must be one of {FRAME_TRANSFORMS}, got {transform!r}")
    box, flip = crop_box(height, width, size=size, resize=resize, train=train, rng=rng)
    return lambda rgb: transform_frame(rgb, box, flip, size)


def _open_video(path: str | os.PathLike):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "video file does not exist")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "video file is empty (0 bytes)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError(path, f"FFmpeg cannot open the file as a media container ({err})") from err
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream in the container")
    return container


def count_frames(path: str | os.PathLike) -> int:
    """Number of video frames, from the container header or, when absent, by counting packets."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _decode_selected(path, wanted: np.ndarray, make_transform) -> tuple[list, int]:
    """Decode front to back once; transform the frames whose position is in ``wanted``.

    ``make_transform(height, width)`` is called once, at the first selected frame, and returns the
    clip's frame transform (uint8[H, W, 3] -> uint8[S, S, 3]), so every frame gets the same crop.
    Returns the transformed frames in ``wanted`` order (None where the stream ended first) and the
    number of frames decoded. A decoder error raises :class:`MediaError` naming the frame.
    """
    wanted_set = {int(i) for i in wanted}
    last = max(wanted_set)
    picked: dict[int, np.ndarray] = {}
    transform = None
    decoded = 0
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding order is unchanged
        try:
            for frame in container.decode(stream):
                if decoded in wanted_set:
                    rgb = frame.to_ndarray(format="rgb24")
                    if transform is None:
                        transform = make_transform(rgb.shape[0], rgb.shape[1])
                    picked[decoded] = transform(rgb)
                decoded += 1
                if decoded > last:
                    break
        except av.error.FFmpegError as err:
            raise MediaError(
                path, f"video stream fails to decode at frame {decoded}: {err}"
            ) from err
    return [picked.get(int(i)) for i in wanted], decoded


# A header may over-count frames by a few (edit lists, a dropped last packet); a stream that ends
# before this fraction of its announced frames is reported as truncated instead.
_MIN_DECODED_FRACTION = 0.9


def load_frames(
    path: str | os.PathLike,
    *,
    num_frames: int,
    train: bool,
    rng: np.random.Generator | None = None,
    size: int = 224,
    resize: str = "crop_flip",
    transform: str = "antialias",
) -> np.ndarray:
    """uint8[num_frames, size, size, 3] RGB frames of the clip at ``path``.

    Args:
      path: any container FFmpeg reads; the first video stream is used.
      num_frames: frames to return (n uniform segments, see :func:`sample_frame_indices`).
      train: random frame per segment and random crop/flip (True) or middle frames, centre crop.
      rng: numpy Generator; required when ``train`` (the crop and frame choices draw from it).
      size: output height and width.
      resize: ``'crop_flip'`` or ``'resize'`` (see the module docstring).
      transform: ``'antialias'`` or ``'released'`` resampling and crop geometry (module docstring).

    Raises:
      MediaError: the file is missing, empty, not a media container, has no video stream,
        has no decodable frame, or fails to decode before the last selected frame.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if transform not in FRAME_TRANSFORMS:
        raise ValueError(f"transform must be one of {FRAME_TRANSFORMS}, got {transform!r}")
    if train and rng is None:
        raise ValueError("load_frames(train=True) needs rng (a numpy Generator)")
    total = count_frames(path)
    if total == 0:
        raise MediaError(path, "video stream has no frames")
    # Draw the frame indices before the crop so a given rng state always gives the same sample.
    wanted = sample_frame_indices(total, num_frames, train=train, rng=rng)

    def make_transform(height, width):
        return clip_transform(
            height, width, size=size, resize=resize, transform=transform, train=train, rng=rng
        )

    frames, decoded = _decode_selected(path, wanted, make_transform)
    if decoded == 0:
        raise MediaError(path, "video stream has no decodable frame")
    if any(f is None for f in frames):
        if decoded < _MIN_DECODED_FRACTION * total:
            raise MediaError(
                path, f"video is truncated: the header announces {total} frames, {decoded} decode"
            )
        # Sample again over the frames that really decode, in a second pass.
        wanted = sample_frame_indices(decoded, num_frames, train=train, rng=rng)
        frames, _ = _decode_selected(path, wanted, make_transform)
    return np.stack(frames)


def probe_video(path: str | os.PathLike, *, full: bool = True) -> dict:
    """Decode the first video stream once (no RGB conversion) and describe it.

    ``full=False`` stops after the first frame (a quick check that the stream decodes at all).

    Returns ``{'frames': decoded, 'header_frames': announced or 0, 'width': int, 'height': int}``.
    Raises :class:`MediaError` as :func:`load_frames` would for this file: missing, empty, not a
    container, no video stream, a decoder error, no frame, or fewer than 90 % of the announced
    frames (truncated).
    """
    decoded = 0
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        header = int(stream.frames or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            for _ in container.decode(stream):
                decoded += 1
                if not full:
                    break
        except av.error.FFmpegError as err:
            raise MediaError(
                path, f"video stream fails to decode at frame {decoded}: {err}"
            ) from err
    if decoded == 0:
        raise MediaError(path, "video stream has no decodable frame")
    if full and header and decoded < _MIN_DECODED_FRACTION * header:
        raise MediaError(
            path, f"video is truncated: the header announces {header} frames, {decoded} decode"
        )
    return {"frames": decoded, "header_frames": header, "width": width, "height": height}
