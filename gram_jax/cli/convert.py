"""``gram-convert``: PyTorch weights -> an orbax checkpoint of Flax params.

  gram-convert --format hf_bert --input PATH --output DIR [--size minilm|base|tiny]
  gram-convert --format eva     --input PATH --output DIR [--size giant|large|base|tiny]
  gram-convert --format beats   --input PATH --output DIR
  gram-convert --format gram    --input PATH --output DIR [--size paper|base|tiny]
               [--modalities text,video,audio,subtitle]

``DIR/params`` is an orbax ``StandardCheckpointer`` checkpoint of a nested dict of float32 arrays:
for ``gram`` the whole ``GramModel`` param tree; for a tower format the tree under the key the
tower has in ``GramModel`` (``{'bert': ...}``, ``{'vision': ...}``, ``{'audio': ...}``), so each
is a valid (partial) ``config.model_init=DIR/params`` for the trainer.
A ``conversion_report.txt`` next to it names every unused source key and every unfilled parameter.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from gram_jax.convert.state_files import read_state_dict, torch_load_error

FORMATS = ("hf_bert", "eva", "beats", "gram")
DEFAULT_SIZES = {"hf_bert": "base", "eva": "giant", "beats": "base", "gram": "paper"}


def convert_file(
    fmt: str,
    input_path: str,
    *,
    size: str | None = None,
    modalities: Sequence[str] = ("text", "video", "audio"),
    allow_missing: bool = False,
    model_overrides: dict | None = None,
):
    """Reads ``input_path`` and converts it; returns (params nested dict, ConversionReport).

    ``model_overrides`` (``--format gram``): ``model_config`` keys for a model that is not one of
    the named sizes, e.g. ``{"embed_dim": 64, "vision": {"image_size": 56, "max_frames": 4}}``.
    """
    if model_overrides and fmt != "gram":
        raise ValueError("--model-overrides applies to --format gram only")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    size = size or DEFAULT_SIZES[fmt]
    if fmt == "beats":
        return _convert_beats(input_path, size, allow_missing)
    state = read_state_dict(input_path)
    if fmt == "hf_bert":
        # lazy: converters and models import flax/JAX; `gram-convert --help` must stay light.
        from gram_jax.convert.hf_bert import convert_hf_bert  # noqa: PLC0415
        from gram_jax.models.bert import bert_config  # noqa: PLC0415

        params, report = convert_hf_bert(state, bert_config(size), allow_missing=allow_missing)
        return {"bert": params}, report
    if fmt == "eva":
        # lazy: converters and models import flax/JAX; `gram-convert --help` must stay light.
        from gram_jax.convert.eva import convert_eva  # noqa: PLC0415
        from gram_jax.models.vit import vit_config  # noqa: PLC0415

        params, report = convert_eva(state, vit_config(size), allow_missing=allow_missing)
        return {"vision": params}, report
    # lazy: converters and models import flax/JAX; `gram-convert --help` must stay light.
    from gram_jax.convert.gram_release import convert_gram_release  # noqa: PLC0415
    from gram_jax.models.gram import model_config  # noqa: PLC0415

    config = model_config(size, modalities=tuple(modalities), **(model_overrides or {}))
    return convert_gram_release(state, config, allow_missing=allow_missing)


def _convert_beats(input_path: str, size: str, allow_missing: bool):
    """A BEATs checkpoint ``{'cfg', 'model'}`` (its cfg wins over ``size``) or a bare state dict."""
    # lazy: converters and models import flax/JAX; `gram-convert --help` must stay light.
    from gram_jax.convert.beats import audio_config_from_beats_cfg, convert_beats  # noqa: PLC0415
    from gram_jax.models.audio import audio_config  # noqa: PLC0415

    path = pathlib.Path(input_path)
    if path.suffix == ".safetensors" or path.is_dir():
        state, cfg = read_state_dict(path), audio_config(size)
    else:
        # lazy: torch is an optional extra, needed only for a .pt/.bin BEATs file.
        import torch  # noqa: PLC0415

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise torch_load_error(path, exc) from exc
        if isinstance(obj, dict) and "model" in obj and "cfg" in obj:
            state, cfg = obj["model"], audio_config_from_beats_cfg(obj["cfg"])
        elif isinstance(obj, dict):
            state, cfg = obj, audio_config(size)
        else:
            raise ValueError(f"{path}: expected a BEATs checkpoint dict, got {type(obj).__name__}")
    params, report = convert_beats(state, cfg, allow_missing=allow_missing)
    return {"audio": params}, report


def save_params(params: dict, output: str | pathlib.Path) -> pathlib.Path:
    """Writes ``params`` (nested dict of arrays) as an orbax checkpoint at ``output``/params."""
    # lazy: orbax imports JAX; `gram-convert --help` must stay light.
    import orbax.checkpoint as ocp  # noqa: PLC0415

    out = pathlib.Path(output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "params"
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --output or remove it")
    tree = _to_arrays(params)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(target, tree)
    ckptr.wait_until_finished()
    return target


def load_params(path: str | pathlib.Path) -> dict:
    """Reads a checkpoint written by ``save_params`` (the dir or its ``params`` child)."""
    # lazy: orbax imports JAX; `gram-convert --help` must stay light.
    import orbax.checkpoint as ocp  # noqa: PLC0415

    path = pathlib.Path(path).absolute()
    if (path / "params").is_dir():
        path = path / "params"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no converted params checkpoint")
    return ocp.StandardCheckpointer().restore(path)


def _to_arrays(tree):
    if isinstance(tree, dict):
        return {str(k): _to_arrays(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gram-convert", description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", required=True, help="weights file or Hugging Face folder")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--size", default=None, help="model size (default per format)")
    parser.add_argument(
        "--modalities", default="text,video,audio", help="for --format gram: comma-separated"
    )
    parser.add_argument(
        "--allow-missing", action="store_true", help="write partial params instead of failing"
    )
    parser.add_argument(
        "--model-overrides",
        default="",
        help="for --format gram: JSON of model_config keys, e.g. '{\"embed_dim\": 64}'",
    )
    args = parser.parse_args(argv)
    params, report = convert_file(
        args.format,
        args.input,
        size=args.size,
        modalities=tuple(m for m in args.modalities.split(",") if m),
        allow_missing=args.allow_missing,
        model_overrides=_json_overrides(args.model_overrides),
    )
    target = save_params(params, args.output)
    summary = report.summary()
    if report.skipped:
        summary += "\nskipped keys: " + ", ".join(report.skipped)
    (pathlib.Path(args.output) / "conversion_report.txt").write_text(summary + "\n")
    print(f"wrote {target}\n{summary}")
    return 0


def _json_overrides(text: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-overrides: not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"--model-overrides: expected a JSON object, got {text!r}")
    return value


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: bad input ends in one line in our words and exit code 2."""
    try:
        code = main(argv)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        # The messages name the file and what was expected; a traceback adds nothing for a user.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gram-convert: error: {message}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    run()
