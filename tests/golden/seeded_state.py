"""A released-layout GRAM state dict drawn from a seed, for the paper-size golden.

No pretrained file exists offline, so the paper-size golden (tests/golden/README.md, "Paper size")
runs the released model on weights drawn here: one NumPy generator per key,
``numpy.random.default_rng([seed, zlib.crc32(key)])``, so each tensor can be drawn alone, in any
order, without torch or the released code. ``make_released_golden.py --size paper`` loads them
into the released model; tests/test_paper_journey.py draws the same values from the committed
manifest (the released state dict's keys, shapes and dtypes) and writes the released ``.pth``.

The distribution keeps a 40-layer tower finite and its outputs input-dependent (random weights,
not a trained model): weight matrices, convolution kernels, embedding and position tables
N(0, 0.02); LayerNorm scales 1 + N(0, 0.02); biases N(0, 0.02); BEATs' gated relative position
scale ``grep_a`` 1 + N(0, 0.02) (the released init is 1) and its weight-norm magnitude
``weight_g`` 1 + N(0, 0.02) (a positive norm per tap); the scalars their released init
(``SCALARS``); the integer ``position_ids`` buffer ``arange``. Any other scalar or integer entry
is an error.
"""

from __future__ import annotations

import json
import pathlib
import zlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

STD = 0.02
CONTRA_TEMP = 0.07  # the released init of GRAM.contra_temp
# The scalars of the released state dict and their released init values (CLIP's logit scale is
# log(1 / 0.07); retrieval never reads it).
SCALARS = {"contra_temp": CONTRA_TEMP, "vision_encoder.logit_scale": float(np.log(1 / 0.07))}


def _is_scale(key: str, shape: tuple[int, ...]) -> bool:
    """A multiplicative parameter whose neutral value is 1 (LayerNorm scales and the like)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("grep_a", "weight_g") or (leaf == "weight" and len(shape) == 1)


def draw(key: str, shape: Iterable[int], dtype: str, seed: int) -> np.ndarray:
    """The entry ``key`` of the drawn state dict: an array of ``shape`` and ``dtype``.

    Args:
      key: the released state-dict key (decides the distribution, and seeds the generator).
      shape: the entry's shape.
      dtype: 'float32' for parameters, 'int64' for the ``position_ids`` buffer.
      seed: the golden's seed.
    Raises:
      ValueError: naming the key, for an integer or scalar entry this module has no rule for.
    """
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    if not np.issubdtype(np.dtype(dtype), np.floating):
        if leaf != "position_ids":
            raise ValueError(f"{key}: integer entry {dtype}{list(shape)} has no drawing rule")
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if not shape:
        if key not in SCALARS:
            raise ValueError(f"{key}: scalar entry has no drawing rule (expected one of {SCALARS})")
        return np.asarray(SCALARS[key], dtype)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(STD)
    if _is_scale(key, shape):
        x += np.float32(1.0)
    return x.astype(dtype, copy=False)


def read_manifest(path: str | pathlib.Path) -> list[tuple[str, tuple[int, ...], str]]:
    """The manifest: JSON ``[[key, [shape...], dtype], ...]`` -> [(key, shape, dtype)]."""
    rows = json.loads(pathlib.Path(path).read_text())
    return [(k, tuple(s), d) for k, s, d in rows]


def write_manifest(entries: Iterable[tuple[str, tuple[int, ...], str]], path) -> None:
    """Writes ``[(key, shape, dtype)]`` as the manifest JSON (one entry a line)."""
    lines = [json.dumps([k, list(s), d]) for k, s, d in entries]
    pathlib.Path(path).write_text("[\n" + ",\n".join(lines) + "\n]\n")


def drawn_state(
    manifest, seed: int, skip_prefixes=(), aliases: Mapping[str, str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(key, array) for each manifest entry not under ``skip_prefixes``, drawn one at a time.

    ``aliases`` maps a key to the earlier key whose tensor it shares in the released model (BERT's
    MLM decoder is tied to the word embeddings): it yields that key's array, not a draw of its own.
    """
    aliases = dict(aliases or {})
    targets = set(aliases.values())
    kept: dict[str, np.ndarray] = {}
    for key, shape, dtype in manifest:
        if key.startswith(tuple(skip_prefixes)):
            continue
        if key in aliases:
            if aliases[key] not in kept:
                raise ValueError(f"{key}: alias of {aliases[key]}, which was not drawn before it")
            yield key, kept[aliases[key]]
            continue
        value = draw(key, shape, dtype, seed)
        if key in targets:
            kept[key] = value
        yield key, value
