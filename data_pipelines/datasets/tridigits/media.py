"""TriDigits media writers: animate a real digit image into a short MP4, convert a real clip to WAV.

The video modality is real content with synthetic motion: each 20x20 handwritten digit is placed
on a black canvas and moved by a smooth affine path (translation, rotation, scale) over a few
frames. The motion is drawn from a generator seeded by (dataset seed, image index), so a build is
reproducible and does not depend on which subset of images is built.

The audio modality is the real recording, decoded by FFmpeg (through PyAV) and written as 16-bit
PCM WAV at the clip's own sample rate and channel count (8 to 48 kHz, mono or stereo), so the
training pipeline's resampling and down-mixing are exercised on real variety. Raw GSM (no header)
needs the FFmpeg format named explicitly.
"""

from __future__ import annotations

import pathlib
import wave

import av
import numpy as np
from PIL import Image


def motion_path(rng: np.random.Generator, num_frames: int, canvas: int) -> np.ndarray:
    """A smooth pose path: float32[num_frames, 4] of (dx, dy, angle_degrees, scale).

    The start and end poses are drawn at random and linearly interpolated, so the digit drifts,
    turns and zooms once across the clip. Ranges keep the 20-pixel digit inside the canvas.
    """
    shift = max(canvas - 20, 0) / 2.0
    start = [rng.uniform(-shift, shift), rng.uniform(-shift, shift)]
    end = [rng.uniform(-shift, shift), rng.uniform(-shift, shift)]
    angles = rng.uniform(-25.0, 25.0, size=2)
    scales = rng.uniform(0.8, 1.2, size=2)
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    lo = np.array([start[0], start[1], angles[0], scales[0]])
    hi = np.array([end[0], end[1], angles[1], scales[1]])
    return ((1 - t) * lo + t * hi).astype(np.float32)


def animate_digit(cell: np.ndarray, poses: np.ndarray, canvas: int) -> np.ndarray:
    """Render one digit along a pose path.

    Args:
      cell: uint8[20, 20] grayscale digit.
      poses: float32[F, 4] from ``motion_path``.
      canvas: output side in pixels (even, for yuv420p).
    Returns:
      uint8[F, canvas, canvas, 3] RGB frames (gray replicated).
    """
    if cell.dtype != np.uint8 or cell.ndim != 2:
        raise ValueError(
            f"animate_digit: expected a uint8 [H, W] cell, got {cell.dtype}{cell.shape}"
        )
    pad = (canvas - cell.shape[0]) // 2
    base = np.zeros((canvas, canvas), np.uint8)
    base[pad : pad + cell.shape[0], pad : pad + cell.shape[1]] = cell
    image = Image.fromarray(base)
    centre = (canvas - 1) / 2.0
    frames = []
    for dx, dy, angle, scale in poses:
        # PIL's AFFINE maps output pixels to input pixels: invert (rotate+scale about the centre,
        # then translate).
        a = np.deg2rad(angle)
        cos, sin = np.cos(a) / scale, np.sin(a) / scale
        ox, oy = centre + dx, centre + dy
        coeffs = (cos, sin, centre - cos * ox - sin * oy, -sin, cos, centre + sin * ox - cos * oy)
        moved = image.transform(
            image.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
        )
        frames.append(np.asarray(moved))
    gray = np.stack(frames)
    return np.repeat(gray[..., None], 3, axis=-1)


def write_mp4(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8[F, H, W, 3] RGB frames as H.264 (lossless, qp 0) in MP4.

    Lossless coding keeps the thin pen strokes of a 20-pixel digit intact (only the RGB -> YUV
    rounding remains); one encoder thread makes the bytes reproducible.
    """
    num, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if num == 0:
        raise ValueError(f"{path}: no frames to encode")


def decode_clip(path: pathlib.Path, container_format: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a speech clip with FFmpeg.

    Returns:
      samples: int16[T, C] interleaved PCM at the stream's own rate and channel count;
      rate: samples per second.
    Raises ValueError naming the file when it holds no audio stream or no samples.
    """
    try:
        container = av.open(str(path), format=container_format)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: FFmpeg cannot open it ({e})") from e
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="s16", layout=layout, rate=stream.rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1, min(channels, 2)))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, min(channels, 2)))
    if not chunks:
        raise ValueError(f"{path}: decoded no samples")
    return np.concatenate(chunks).astype(np.int16), int(stream.rate)


def write_wav(path: pathlib.Path, samples: np.ndarray, rate: int) -> None:
    """Write int16[T, C] PCM as a WAV file."""
    if samples.dtype != np.int16 or samples.ndim != 2:
        raise ValueError(
            f"{path}: expected int16 [T, C] samples, got {samples.dtype}{samples.shape}"
        )
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
