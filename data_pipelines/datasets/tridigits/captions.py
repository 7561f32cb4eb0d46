"""TriDigits captions: the number word plus what the video's synthetic motion does.

A TriDigits text of the default build is one number word, a function of (language, digit): a test
split holds ~40 distinct texts however many records it has, so a text -> (video, audio) retrieval
has ~40 distinct queries. The caption variant (``BuildOptions(text="caption")``) also says how the
digit moves, read off the record's own pose path (``media.motion_path``), which only the video
shows:

    "sieben: left, clockwise, growing"

- the number word in the recording's language (shared by all three modalities; the language ties
  it to the speech);
- the drift: ``left`` / ``right`` / ``up`` / ``down``, the larger axis of the displacement from the
  first to the last frame (image axes: y grows downwards);
- the turn: ``clockwise`` / ``anticlockwise``, the sign of the angle change as seen on screen;
- the zoom: ``growing`` / ``shrinking``, the sign of the scale change.

16 motion phrases x ~40 words give ~350 distinct captions among a fold's 500 test records. The
motion words are English whatever the language. Small motions (a drift under a pixel) are still
named by their sign: the caption is exact about the path, not about what is easy to see.
"""

from __future__ import annotations

import numpy as np

DRIFTS = ("left", "right", "up", "down")
TURNS = ("clockwise", "anticlockwise")
ZOOMS = ("growing", "shrinking")


def motion_words(poses: np.ndarray) -> tuple[str, str, str]:
    """(drift, turn, zoom) of a pose path float[F, 4] of (dx, dy, angle_degrees, scale).

    ``media.animate_digit`` draws a positive angle clockwise on screen and a positive dy lower in
    the frame (tests/test_tridigits.py renders a bar to check both).
    """
    poses = np.asarray(poses, np.float64)
    if poses.ndim != 2 or poses.shape[1] != 4 or len(poses) < 2:
        raise ValueError(f"motion_words: expected poses of shape [F >= 2, 4], got {poses.shape}")
    dx, dy, angle, scale = poses[-1] - poses[0]
    if abs(dx) >= abs(dy):
        drift = "right" if dx > 0 else "left"
    else:
        drift = "down" if dy > 0 else "up"
    return (
        drift,
        "clockwise" if angle > 0 else "anticlockwise",
        "growing" if scale > 0 else "shrinking",
    )


def caption(word: str, poses: np.ndarray) -> str:
    """``"<word>: <drift>, <turn>, <zoom>"`` (module docstring)."""
    return f"{word}: {', '.join(motion_words(poses))}"
