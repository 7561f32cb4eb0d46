"""Rank media against text queries: what ``gram-rank`` does, as library calls.

- `folder_items`: a folder's items (each video, paired with the same-stem audio file);
- `rank`: the one call behind ``gram-rank`` (load, embed, score, print, optionally save);
- `format_ranking`: the printed table; `save_embeddings`: the .npz of queries and items.

The embeddings file (`save_embeddings`, ``gram-rank --save_embeddings FILE``) is a plain .npz
(no pickled objects; ``np.load(FILE)`` reads it) with the keys

- ``queries``: str[Q], the query texts; ``query_embeddings``: float32[Q, D] unit vectors;
- ``item_names``: str[N], one label per item (the file stem);
- ``modalities``: str[M], the items' modalities in Gram order;
- ``item_embeddings_<m>``: float32[N, D] and ``item_present_<m>``: bool[N] for each modality
  ``m`` (an absent modality has a zero row and ``False``);
- ``scores``: float[Q, N], the printed scores (higher = better);
- ``scoring``: str[], the scoring that gave them.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from data_pipelines.media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from gram_jax.config.validation import ConfigError
from gram_jax.inference import INFERENCE_SCORINGS, EmbeddedMedia, EmbeddedTexts, GramInference
from gram_jax.train import workdir as workdir_paths

# Extensions that hold audio only: a video file's own extension (.mp4, .mkv) never pairs as audio.
_AUDIO_ONLY = tuple(e for e in AUDIO_EXTENSIONS if e not in VIDEO_EXTENSIONS)


def folder_items(media_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(videos, audios) of a folder, one entry per video file, sorted by name: each video's audio
    is the audio file with the same stem (``.mp3``, ``.wav``, ...) or else the video itself (its
    own audio track).

    Raises FileNotFoundError when the folder does not exist or has no video file.
    """
    folder = pathlib.Path(media_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"media_dir: {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not videos:
        raise FileNotFoundError(
            f"media_dir: {folder} holds no video file ({', '.join(VIDEO_EXTENSIONS)})"
        )
    by_stem = {p.stem: p for p in files if p.suffix.lower() in _AUDIO_ONLY}
    audios = [by_stem.get(v.stem, v) for v in videos]
    return [str(v) for v in videos], [str(a) for a in audios]


def format_ranking(
    queries: Sequence[str], names: Sequence[str], scores, *, top: int | None = None
) -> str:
    """One block per query: ``rank  item  score`` lines, best first (scores float[Q, N]); with
    ``top``, only the best ``top`` items of each query."""
    width = max(len(n) for n in names)
    lines = []
    for q, query in enumerate(queries):
        lines.append(f"query: {query}")
        order = sorted(range(len(names)), key=lambda j: -float(scores[q][j]))
        for rank, j in enumerate(order[:top], start=1):
            lines.append(f"  {rank:>3}  {names[j]:<{width}}  {float(scores[q][j]):+.4f}")
    return "\n".join(lines)


def save_embeddings(
    path: str | os.PathLike,
    texts: EmbeddedTexts,
    media: EmbeddedMedia,
    scores: np.ndarray,
    scoring: str,
) -> pathlib.Path:
    """Writes the .npz of the module docstring to ``path`` (``.npz`` appended when missing);
    returns the path written."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = dict(
        queries=np.asarray(texts.texts, str),
        query_embeddings=np.asarray(texts.embeddings, np.float32),
        item_names=np.asarray(media.names, str),
        modalities=np.asarray(media.modalities, str),
        scores=np.asarray(scores),
        scoring=np.asarray(scoring, str),
    )
    for m in media.modalities:
        arrays[f"item_embeddings_{m}"] = np.asarray(media.embeddings[m], np.float32)
        arrays[f"item_present_{m}"] = np.asarray(media.present[m], bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


def rank(
    checkpoint: str | os.PathLike | None,
    queries: Sequence[str],
    *,
    config=None,
    step: int | None = None,
    media_dir: str | os.PathLike | None = None,
    videos: Sequence[str] | None = None,
    audios: Sequence[str] | None = None,
    scoring: str = "volume",
    top: int | None = None,
    rerank_top_k: int = 50,
    batch_size: int = 8,
    save_embeddings_to: str | os.PathLike | None = None,
) -> str:
    """Ranks the items (``media_dir``'s, or ``videos``/``audios`` paired by position) against
    ``queries`` with a checkpoint (`GramInference.load`; None: ``config.model_init``); returns the
    printed text: a header line and `format_ranking` (best ``top`` per query, all when None).
    ``rerank_top_k``: the candidates the ``matching`` scoring re-ranks. ``save_embeddings_to``:
    also write the .npz of the module docstring.

    Raises:
      ConfigError: inputs that cannot be used (no items, both or neither of media_dir and lists,
        lists of different lengths, an unknown scoring, a non-positive top / rerank_top_k /
        batch_size, a missing media folder or checkpoint), in one line naming them.
    """
    queries = [str(q) for q in queries or ()]
    if not queries:
        raise ConfigError("queries: give at least one text query")
    if bool(media_dir) == bool(videos or audios):
        raise ConfigError("media: give either media_dir or videos/audios (not both)")
    if videos and audios and len(videos) != len(audios):
        raise ConfigError(f"videos has {len(videos)} files, audios {len(audios)}")
    if scoring not in INFERENCE_SCORINGS:
        raise ConfigError(f"scoring: expected one of {INFERENCE_SCORINGS}, got {scoring!r}")
    for name, value in (("top", top), ("rerank_top_k", rerank_top_k), ("batch_size", batch_size)):
        if value is not None and int(value) <= 0:
            raise ConfigError(f"{name}: expected a positive int, got {value}")
    if not checkpoint and config is not None and config.get("model_init"):
        checkpoint = config.model_init  # converted weights named in the config
    if not checkpoint:
        raise ConfigError("checkpoint: give a workdir or converted weights (or config.model_init)")
    if not workdir_paths.resolve(checkpoint).exists():
        raise ConfigError(f"checkpoint: {checkpoint} does not exist")
    if media_dir:
        try:
            videos, audios = folder_items(media_dir)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from err
    gram = GramInference.load(checkpoint, config, step=step, batch_size=batch_size)
    if "audio" not in gram.data_modalities:
        audios = None
    if "video" not in gram.data_modalities:
        videos = None
    texts = gram.embed_texts(queries)
    media = gram.embed_media(videos=videos, audios=audios)
    scores = gram.score(texts, media, scoring, top_k=rerank_top_k)
    lines = [f"checkpoint {gram.source}; scoring {scoring}; {len(media.names)} items"]
    if save_embeddings_to:
        written = save_embeddings(save_embeddings_to, texts, media, scores, scoring)
        lines.append(f"embeddings: {written}")
    lines.append(format_ranking(queries, media.names, scores, top=top))
    return "\n".join(lines)


__all__ = ["folder_items", "format_ranking", "rank", "save_embeddings"]
