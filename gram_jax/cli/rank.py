"""``gram-rank``: rank a folder of media (or listed files) against text queries with a checkpoint.

    gram-rank --checkpoint runs/my_run --media_dir my_clips --queries "a dog barking" \\
        --queries "a cat meowing" --top 5
    gram-rank --checkpoint ckpt/params --config experiments/paper/zeroshot_tva.py \\
        --videos v1.mp4,v2.mp4 --audios a1.mp3,a2.mp3 --queries "a dog barking" --scoring matching

``--media_dir``: every video file of the folder is one item; its audio is the audio file with the
same stem in the folder (``.mp3``, ``.wav``, ...) or, when there is none, the video's own audio
track. ``--videos``/``--audios``: comma-separated files, items paired by position. ``--queries``
is repeated once per query (a query may hold commas). The checkpoint is a gram-train workdir (its
saved config is used unless ``--config`` is given) or gram-convert weights (``--config``
required; without ``--checkpoint``, ``--config.model_init=DIR/params`` names them); see
`gram_jax.inference`. Prints, per query, the items from best to worst with their
scores (higher = better; ``volume`` scores are minus the Gram volume), the best ``--top`` only when
given. ``--save_embeddings FILE`` also writes the query and item embeddings
(`gram_jax.inference.rank` lists the keys of that .npz).

One library call, `gram_jax.inference.rank.rank`; inputs it cannot use end in one line and exit
code 2 (`gram_jax.cli.exit_codes`).
"""

from __future__ import annotations

from absl import app, flags

from gram_jax.config.loading import define_config_flag
from gram_jax.train.metric_writers import configure_console

FLAGS = flags.FLAGS
define_config_flag(
    "config",
    "Experiment config file path[:arg] (required for converted weights; default: the "
    "config saved with a workdir's checkpoint).",
)
flags.DEFINE_string(
    "checkpoint", None, "A gram-train workdir, or gram-convert weights (DIR/params)."
)
flags.DEFINE_integer("step", None, "Checkpoint step of a workdir (default: the latest).")
flags.DEFINE_string("media_dir", None, "Folder of videos (+ same-stem audio files).")
flags.DEFINE_list("videos", None, "Video files, comma-separated (paired with --audios).")
flags.DEFINE_list("audios", None, "Audio files, comma-separated (paired with --videos).")
flags.DEFINE_multi_string("queries", None, "A text query; repeat the flag for several.")
flags.DEFINE_string("scoring", "volume", "volume, cosine or matching (gram_jax.inference).")
flags.DEFINE_integer("top", None, "Print only the best TOP items per query (default: all).")
flags.DEFINE_integer("rerank_top_k", 50, "Candidates per query the matching scoring re-ranks.")
flags.DEFINE_integer("batch_size", 8, "Rows per encoder call.")
flags.DEFINE_string("save_embeddings", None, "Also write query/item embeddings to this .npz.")
flags.mark_flags_as_required(["queries"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)
    # lazy: `gram-rank --help` must not import JAX.
    from gram_jax.cli.exit_codes import run_to_exit_code  # noqa: PLC0415
    from gram_jax.inference.rank import rank  # noqa: PLC0415

    def run_rank():
        print(
            rank(
                FLAGS.checkpoint,
                FLAGS.queries,
                config=FLAGS.config,
                step=FLAGS.step,
                media_dir=FLAGS.media_dir,
                videos=FLAGS.videos,
                audios=FLAGS.audios,
                scoring=FLAGS.scoring,
                top=FLAGS.top,
                rerank_top_k=FLAGS.rerank_top_k,
                batch_size=FLAGS.batch_size,
                save_embeddings_to=FLAGS.save_embeddings,
            )
        )

    return run_to_exit_code(run_rank, "gram-rank")


def run() -> None:
    """Console script ``gram-rank``."""
    app.run(main)


if __name__ == "__main__":
    run()
