"""Loading the golden outputs of the released GRAM code (tests/golden/README.md) for the tests.

Only the committed files are read: neither the released code nor the network is needed.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gram_jax.models.gram import GramModel

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
PAPER = GOLDEN / "paper"  # the paper-size golden (seeded weights; tests/golden/README.md)


@functools.cache
def meta(golden: pathlib.Path = GOLDEN) -> dict:
    """``golden``/released_meta.json: settings, metrics, versions (the reduced golden also: loss
    values and drawn negatives)."""
    return json.loads((golden / "released_meta.json").read_text())


@functools.cache
def arrays(name: str, golden: pathlib.Path = GOLDEN) -> dict[str, np.ndarray]:
    """All arrays of ``golden``/released_<name>.npz (inputs, outputs, preprocessing, state)."""
    with np.load(golden / f"released_{name}.npz") as f:
        return {k: f[k] for k in f.files}


def state_dict() -> dict[str, np.ndarray]:
    """The released model's state dict, the word-embedding table made dense again.

    The table is stored as its used rows (``<key>#rows`` + the rows); every other row of the
    model that ran was zero (make_released_golden.py).
    """
    stored = arrays("state")
    out = {k: v for k, v in stored.items() if not k.endswith("#rows")}
    for key, shape in meta()["sparse"].items():
        dense = np.zeros(shape, np.float32)
        dense[stored[key + "#rows"]] = stored[key]
        out[key] = dense
    return out


def model_overrides() -> dict:
    """``model_config`` overrides: the reduced released shapes, dropout off, released matching.

    The matching and temperature keys are those ``gram_jax.config.fidelity`` sets for 'released'
    (tests/test_fidelity.py checks that they agree).
    """
    m = meta()
    s = m["sizes"]
    return dict(
        modalities=("text", "video", "audio", "subtitle"),
        embed_dim=s["contra_dim"],
        text=dict(dropout_rate=0.0, attn_dropout_rate=0.0),
        vision=dict(image_size=s["eva"]["image"], max_frames=m["train_frames"]),
        audio=dict(dropout_rate=0.0, attn_dropout_rate=0.0, max_clips=1),
        matching=dict(
            enabled=True,
            condition_modalities=("video", "audio"),
            eval_condition="data",
            condition_padding="attend",
        ),
        temperature=dict(parametrization="reference"),
    )


def batch(frames_key: str, golden: pathlib.Path = GOLDEN) -> dict[str, np.ndarray]:
    """The golden model inputs in gram_jax's batch contract (frames channels-last, float32)."""
    x = arrays("inputs", golden)
    frames = x[frames_key].astype(np.float32)  # [B, F, 3, H, W], CLIP-normalised
    return {
        "text_ids": x["caption_ids"],
        "text_mask": x["caption_mask"],
        "subtitle_ids": x["subtitle_ids"],
        "subtitle_mask": x["subtitle_mask"],
        "video": np.transpose(frames, (0, 1, 3, 4, 2)),
        "audio": x["fbank"].astype(np.float32),
    }


def zeros_model(config, params=None):
    """``GramModel(config)`` with every array zero, or with ``params`` (a complete pure dict,
    e.g. converted) as its parameters and the rest zero. No init runs: eager init is slow on CPU
    and the values are replaced anyway; the zero RNG keys only matter for dropout, which these
    tests turn off. With ``params`` no zero parameter is allocated (at the paper's size the
    parameters are ~5 GB)."""

    def zeros(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jnp.zeros((*s.shape, 2), jnp.uint32))
        return jnp.zeros(s.shape, s.dtype)

    abstract = nnx.eval_shape(lambda: GramModel(config, rngs=nnx.Rngs(0)))
    graphdef, p, rest = nnx.split(abstract, nnx.Param, ...)
    if params is None:
        p = jax.tree.map(zeros, p)
    else:
        nnx.replace_by_pure_dict(p, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, p, jax.tree.map(zeros, rest))


def abstract_params(config) -> dict:
    """The pure dict of ``GramModel(config)``'s parameters as ShapeDtypeStructs (no array)."""
    abstract = nnx.eval_shape(lambda: GramModel(config, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def jit_encode(model, x, *, train: bool):
    """``model.encode(x, train=train)`` under jit: (embeddings, condition, condition_mask)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def encode(state, x):
        out = nnx.merge(graphdef, state).encode(x, train=train)
        return out.embeddings, out.condition, out.condition_mask

    emb, cond, mask = encode(state, x)
    return {m: np.asarray(v) for m, v in emb.items()}, cond, mask
