"""The released code's frame geometry: torchvision 0.15 transforms on float tensors, in NumPy.

The released loader (reference section 4.2) turns the decoded uint8 frames into a float tensor
(``pixels / 255``) and applies torchvision 0.15 transforms to it. On tensors, that version resizes
with ``interpolate(mode='bilinear', align_corners=False)`` and **no anti-aliasing** (its
``antialias`` default resolves to off for tensors), so a 2x or larger downscale samples the source
sparsely instead of averaging it. The geometry per reference transform:

- ``crop_flip`` evaluation: ``Resize(size)`` scales the whole frame so that its short side is
  ``size`` (long side ``int(size * long / short)``), then ``CenterCrop(size)`` takes the window at
  ``round((h - size) / 2), round((w - size) / 2)``.
- ``crop_flip`` training: ``RandomResizedCrop(size, scale=(0.8, 1), ratio=(1, 1))`` draws a square
  of 80-100 % of the **full frame's** area (10 tries; it fits only when the frame is close to
  square), falls back to the centre square of the short side, resizes it to ``size x size``; then
  ``RandomHorizontalFlip``. The same draw serves every frame of a clip.
- ``resize``: ``Resize((size, size))`` on the whole frame (aspect distorted).

Frames stay uint8 here (the batch contract): the float result is rounded to the nearest level, at
most 0.5/255 from the released float64 values. The random draws use a NumPy Generator, so the
crops follow the released distribution, not torch's random stream.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# RandomResizedCrop's number of tries before its fallback (torchvision's constant).
_CROP_ATTEMPTS = 10
_CROP_SCALE = (0.8, 1.0)


class FramePlan(NamedTuple):
    """One clip's geometry: crop ``box`` of the source, resize to ``resized``, take the
    ``size x size`` window at ``offset`` of the resized image, flip if ``flip``.

    box: (top, left, height, width) in source pixels; resized: (height, width); offset: (top, left).
    """

    box: tuple[int, int, int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    flip: bool


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper) per output position, align_corners=False.

    Output position ``d`` samples source coordinate ``(d + 0.5) * in / out - 0.5``, clamped below
    at 0 (as PyTorch does for linear modes); the upper neighbour is clamped at the last pixel.
    """
    scale = in_size / out_size
    coord = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    lower = np.minimum(np.floor(coord).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, coord - lower


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float64[height, width, C]: ``image`` ([H, W, C], any real dtype) resized bilinearly.

    Equal to ``torch.nn.functional.interpolate(x, size=(height, width), mode='bilinear',
    align_corners=False, antialias=False)`` on the same values in float64 (separable: rows, then
    columns; each output pixel mixes at most 2 x 2 source pixels whatever the scale).
    """
    if image.ndim != 3:
        raise ValueError(f"bilinear_resize expects [H, W, C], got shape {image.shape}")
    if height <= 0 or width <= 0:
        raise ValueError(f"bilinear_resize: output size must be positive, got {height}x{width}")
    source = image.astype(np.float64, copy=False)
    top, bottom, wy = _source_index(height, source.shape[0])
    rows = source[top] * (1.0 - wy)[:, None, None] + source[bottom] * wy[:, None, None]
    left, right, wx = _source_index(width, source.shape[1])
    return rows[:, left] * (1.0 - wx)[None, :, None] + rows[:, right] * wx[None, :, None]


def _random_resized_square(height: int, width: int, rng: np.random.Generator):
    """(top, left, side, side) of RandomResizedCrop(scale=(0.8, 1), ratio=(1, 1)) on H x W."""
    area = height * width
    for _ in range(_CROP_ATTEMPTS):
        # ratio (1, 1): the log-uniform aspect draw is always 1, so the crop is a square.
        side = int(round(math.sqrt(area * rng.uniform(*_CROP_SCALE))))
        if 0 < side <= width and 0 < side <= height:
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            return top, left, side, side
    side = min(height, width)  # the fallback for a ratio range (1, 1): the centre square
    return (height - side) // 2, (width - side) // 2, side, side


def released_plan(
    height: int, width: int, *, size: int, resize: str, train: bool, rng
) -> FramePlan:
    """The released transform's :class:`FramePlan` for an H x W clip (module docstring).

    ``rng`` (numpy Generator) is drawn from only for training with ``crop_flip``.
    """
    full = (0, 0, height, width)
    if resize == "resize":
        return FramePlan(full, (size, size), (0, 0), False)
    if resize != "crop_flip":
        raise ValueError(f"resize must be 'crop_flip' or 'resize', got {resize!r}")
    if train:
        box = _random_resized_square(height, width, rng)
        return FramePlan(box, (size, size), (0, 0), bool(rng.random() < 0.5))
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    resized = (size, new_long) if height <= width else (new_long, size)
    offset = (int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0)))
    return FramePlan(full, resized, offset, False)


def apply_plan(rgb: np.ndarray, plan: FramePlan, size: int) -> np.ndarray:
    """uint8[size, size, 3]: ``rgb`` (uint8[H, W, 3]) cropped, resized, windowed, maybe flipped."""
    top, left, crop_h, crop_w = plan.box
    region = rgb[top : top + crop_h, left : left + crop_w]
    resized = bilinear_resize(region, *plan.resized)
    dy, dx = plan.offset
    window = resized[dy : dy + size, dx : dx + size]
    if plan.flip:
        window = window[:, ::-1]
    # Values stay within [0, 255] (convex combinations); rounding is the only change.
    return np.ascontiguousarray(np.rint(window).astype(np.uint8))
