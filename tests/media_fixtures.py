"""Real-format edge-case media written with PyAV (FFmpeg's encoders) into a test's tmp_path.

Every file is a genuine container/codec combination as FFmpeg writes it: 5.1 AAC, 8 kHz mono PCM
WAV, a video with no audio stream, MP3, and videos whose frames carry their own index (a flat grey
level per frame) so frame selection can be checked exactly after lossy coding.
"""

from __future__ import annotations

import pathlib

import av
import numpy as np


def write_audio(
    path: pathlib.Path,
    signal: np.ndarray,
    *,
    rate: int,
    codec: str,
    layout: str,
    container_format: str | None = None,
) -> pathlib.Path:
    """Encode float32[channels, samples] in [-1, 1] with ``codec`` into ``path``."""
    signal = np.asarray(signal, dtype=np.float32)
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        block = 1024
        for start in range(0, signal.shape[1], block):
            chunk = signal[:, start : start + block]
            if fmt == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            elif fmt == "s16p":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            elif fmt == "s32p":
                data = (np.clip(chunk, -1, 1) * (2**31 - 1)).astype(np.int32)
            elif fmt == "fltp":
                data = np.ascontiguousarray(chunk)
            elif fmt == "flt":
                data = np.ascontiguousarray(chunk.T.reshape(1, -1))
            else:
                raise ValueError(f"test helper: unhandled sample format {fmt}")
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """float32[samples] sine wave."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_index_video(
    path: pathlib.Path,
    num_frames: int,
    *,
    size: tuple[int, int] = (96, 64),
    fps: int = 25,
    codec: str = "libx264",
    with_audio: bool = False,
) -> pathlib.Path:
    """A clip whose frame ``i`` is flat grey ``frame_level(i)``; size = (width, height)."""
    if num_frames > 60:
        raise ValueError("write_index_video: at most 60 frames (grey levels 10 + 4 * i)")
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Lossless H.264 (with B-frames, so decode order differs from display order): every
        # frame's grey level survives exactly, up to the RGB <-> YUV rounding.
        stream.codec_context.options = {"qp": "0"} if codec == "libx264" else {}
        audio = out.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(num_frames):
            img = np.full((height, width, 3), frame_level(i), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if audio is not None:
            tone = sine(440, num_frames / fps, 16000)[None]
            for start in range(0, tone.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + 1024]),
                    format="fltp",
                    layout="mono",
                )
                frame.sample_rate, frame.pts = 16000, start
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)
    return path


def frame_level(i: int) -> int:
    return 10 + 4 * i


def level_to_index(frames: np.ndarray) -> np.ndarray:
    """int[F] frame index recovered from the mean grey level of uint8[F, H, W, 3] frames."""
    return np.round((frames.reshape(len(frames), -1).mean(axis=1) - 10) / 4).astype(int)
