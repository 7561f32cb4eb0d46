"""``gram-rank``: rank a folder of media (or listed files) against text queries with a checkpoint.

    gram-rank --checkpoint runs/my_run --media-dir my_clips --queries "a dog barking" "a cat"
    gram-rank --checkpoint gram.msgpack --config experiments/paper/zeroshot_tva.py \\
        --videos v1.mp4 v2.mp4 --audios a1.mp3 a2.mp3 --queries "a dog barking" --scoring matching

``--media-dir``: every video file of the folder is one item; its audio is the audio file with the
same stem in the folder (``.mp3``, ``.wav``, ...) or, when there is none, the video's own audio
track. ``--videos``/``--audios``: items paired by position. The checkpoint is a gram-train workdir
(its saved config is used unless ``--config`` is given) or gram-convert weights (``--config``
required); see `gram_jax.inference`. Prints, per query, the items from best to worst with their
scores (higher = better; ``volume`` scores are minus the Gram volume).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from data_pipelines.media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from gram_jax.config.loading import load_config
from gram_jax.inference import INFERENCE_SCORINGS, GramInference

# Extensions that hold audio only: a video file's own extension (.mp4, .mkv) never pairs as audio.
_AUDIO_ONLY = tuple(e for e in AUDIO_EXTENSIONS if e not in VIDEO_EXTENSIONS)


def folder_items(media_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(videos, audios) of a folder, one entry per video file, sorted by name (see module doc).

    Raises FileNotFoundError when the folder has no video file.
    """
    folder = pathlib.Path(media_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--media-dir: {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not videos:
        raise FileNotFoundError(
            f"--media-dir: {folder} holds no video file ({', '.join(VIDEO_EXTENSIONS)})"
        )
    by_stem = {p.stem: p for p in files if p.suffix.lower() in _AUDIO_ONLY}
    audios = [by_stem.get(v.stem, v) for v in videos]
    return [str(v) for v in videos], [str(a) for a in audios]


def format_ranking(queries: Sequence[str], names: Sequence[str], scores) -> str:
    """One block per query: ``rank  item  score`` lines, best first (scores float[Q, N])."""
    width = max(len(n) for n in names)
    lines = []
    for q, query in enumerate(queries):
        lines.append(f"query: {query}")
        order = sorted(range(len(names)), key=lambda j: -float(scores[q][j]))
        for rank, j in enumerate(order, start=1):
            lines.append(f"  {rank:>3}  {names[j]:<{width}}  {float(scores[q][j]):+.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gram-rank", description="Rank media files against text queries with a GRAM model."
    )
    parser.add_argument("--checkpoint", required=True, help="gram-train workdir or weights file")
    parser.add_argument("--config", help="experiment config path[:arg] (required for weights)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument("--media-dir", help="folder of videos (+ same-stem audio files)")
    parser.add_argument("--videos", nargs="+", help="video files (paired with --audios)")
    parser.add_argument("--audios", nargs="+", help="audio files (paired with --videos)")
    parser.add_argument("--queries", nargs="+", required=True, help="text queries")
    parser.add_argument("--scoring", choices=INFERENCE_SCORINGS, default="volume")
    parser.add_argument("--top-k", type=int, default=50, help="candidates re-ranked (matching)")
    parser.add_argument("--batch-size", type=int, default=8, help="items per encoder call")
    args = parser.parse_args(argv)
    if bool(args.media_dir) == bool(args.videos or args.audios):
        parser.error("give either --media-dir or --videos/--audios")
    if args.videos and args.audios and len(args.videos) != len(args.audios):
        parser.error(f"--videos has {len(args.videos)} files, --audios {len(args.audios)}")

    if args.media_dir:
        try:
            videos, audios = folder_items(args.media_dir)
        except FileNotFoundError as err:
            parser.error(str(err))
    else:
        videos, audios = args.videos, args.audios
    config = None
    if args.config:
        config = load_config(args.config)
    gram = GramInference.load(args.checkpoint, config, step=args.step, batch_size=args.batch_size)
    if "audio" not in gram.data_modalities:
        audios = None
    if "video" not in gram.data_modalities:
        videos = None
    texts = gram.embed_texts(args.queries)
    media = gram.embed_media(videos=videos, audios=audios)
    scores = gram.score(texts, media, args.scoring, top_k=args.top_k)
    print(f"checkpoint {gram.source}; scoring {args.scoring}; {len(media.names)} items")
    print(format_ranking(args.queries, media.names, scores))
    return 0


def run() -> None:
    """Console script ``gram-rank``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
