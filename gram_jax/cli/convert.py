"""``gram-convert``: PyTorch weights -> a converted-weights file (`gram_jax.convert.weights`).

  gram-convert --format gram --input GRAM_pretrained.pt --output DIR \\
      --config experiments/paper/finetune_tva.py:msrvtt      # the target model of that run
  gram-convert --format gram    --input PATH --output DIR [--size paper|base|tiny]
               [--modalities text,video,audio,subtitle] [--model_overrides JSON]
  gram-convert --format hf_bert --input PATH --output DIR [--size minilm|base|tiny]
  gram-convert --format eva     --input PATH --output DIR [--size giant|large|base|tiny]
  gram-convert --format beats   --input PATH --output DIR

``DIR/params`` is an orbax checkpoint of the parameter tree (`gram_jax.convert.params_file`),
what ``--config.model_init=DIR/params`` of gram-train / gram-eval reads; ``--output F.msgpack``
writes one file instead. ``DIR/conversion_report.txt`` names every unused source key. Exit code 2
(one line) when the input or the arguments are refused: `gram_jax.cli.exit_codes`.
"""

from __future__ import annotations

import json

from absl import app, flags

from gram_jax.config.loading import define_config_flag
from gram_jax.train.metric_writers import configure_console

FORMATS = ("hf_bert", "eva", "beats", "gram")

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", None, FORMATS, "Source weights format.")
flags.DEFINE_string("input", None, "Weights file (.pt/.pth/.bin/.safetensors) or a HF folder.")
flags.DEFINE_string("output", None, "Output directory (writes DIR/params), or a .msgpack file.")
define_config_flag(
    "config", "--format gram: the run config (file.py[:arg]) whose model is the target."
)
flags.DEFINE_string("size", None, "Model size (default per format); not with --config.")
flags.DEFINE_list("modalities", None, "--format gram without --config: the model's modalities.")
flags.DEFINE_bool("allow_missing", False, "Write partial params instead of failing.")
flags.DEFINE_string(
    "model_overrides",
    "",
    "--format gram without --config: JSON of model_config keys, e.g. '{\"embed_dim\": 64}'.",
)
flags.mark_flags_as_required(["format", "input", "output"])


def _json_overrides(text: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model_overrides: not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"--model_overrides: expected a JSON object, got {text!r}")
    return value


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    configure_console(FLAGS.verbosity)
    # lazy: `gram-convert --help` must not import JAX (exit_codes and the converters import it).
    from gram_jax.cli.exit_codes import run_to_exit_code  # noqa: PLC0415
    from gram_jax.convert.weights import ConversionRefused, convert  # noqa: PLC0415

    def convert_from_flags():
        try:
            overrides = _json_overrides(FLAGS.model_overrides)
        except ValueError as exc:
            raise ConversionRefused(str(exc)) from exc
        return convert(
            FLAGS.format,
            FLAGS.input,
            FLAGS.output,
            config=FLAGS.config,
            size=FLAGS.size,
            modalities=FLAGS.modalities,
            allow_missing=FLAGS.allow_missing,
            model_overrides=overrides,
        )

    return run_to_exit_code(convert_from_flags, "gram-convert")


def run(argv=None) -> None:
    """Console script `gram-convert` (``argv``: for in-process tests, flags reset first)."""
    if argv is not None:
        FLAGS.unparse_flags()
        argv = ["gram-convert", *argv]
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
