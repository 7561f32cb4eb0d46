"""Converting a PyTorch weights file into a converted-weights file: what ``gram-convert`` runs.

Formats: ``hf_bert`` (a Hugging Face BERT), ``eva`` (an EVA-CLIP visual tower), ``beats`` (a BEATs
checkpoint), ``gram`` (a released GRAM model). A tower format writes the tree under the key the
tower has in ``GramModel`` (``{'bert': ...}``, ``{'vision': ...}``, ``{'audio': ...}``): a partial
``config.model_init``. ``gram`` writes the whole ``GramModel`` param tree of the target model:

- with a run config (``config=``, what ``gram-convert --config file.py:arg`` passes), the model
  of the prepared ``config.model`` (`gram_jax.config.prepare`): its modalities, its frame and clip
  tables (nearest-resized from the file's, as the released loader does) and its temperature
  parametrisation, so the output loads into that run with nothing left at init;
- otherwise ``model_config(size, modalities=..., **model_overrides)``.

Every parameter of the target is filled or the conversion stops naming the unfilled ones (unless
``allow_missing``); ``conversion_report.txt`` beside the output names every unused source key.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from gram_jax.config.validation import ConfigError
from gram_jax.convert.params_file import save_params
from gram_jax.convert.state_files import read_state_dict, torch_load_error

FORMATS = ("hf_bert", "eva", "beats", "gram")
DEFAULT_SIZES = {"hf_bert": "base", "eva": "giant", "beats": "base", "gram": "paper"}
DEFAULT_MODALITIES = ("text", "video", "audio")


class ConversionRefused(ConfigError):
    """The input file or the arguments cannot give the requested weights (exit code 2)."""


def convert_file(
    fmt: str,
    input_path: str,
    *,
    size: str | None = None,
    modalities: Sequence[str] | None = None,
    allow_missing: bool = False,
    model_overrides: dict | None = None,
    model=None,
):
    """Reads ``input_path`` and converts it; returns (params nested dict, ConversionReport).

    Args:
      fmt: one of `FORMATS`.
      input_path: a weights file or Hugging Face folder (`state_files.read_state_dict`).
      size: the model size (default per format); not with ``model``.
      modalities: ``--format gram``: the model's modalities (default text, video, audio).
      allow_missing: return partial params instead of raising on unfilled parameters.
      model_overrides: ``--format gram``: ``model_config`` keys for a model that is not one of
        the named sizes, e.g. ``{"embed_dim": 64, "vision": {"image_size": 56}}``.
      model: ``--format gram``: the target model ConfigDict (a prepared run's ``config.model``);
        excludes ``size``, ``modalities`` and ``model_overrides``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "gram" and (model_overrides or model is not None or modalities):
        raise ValueError("--model_overrides, --modalities and --config apply to --format gram only")
    if model is not None and (size or model_overrides or modalities):
        raise ValueError(
            "--config gives the whole target model: drop --size, --modalities and "
            "--model_overrides (override the config instead, e.g. --config.model.embed_dim=64)"
        )
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

    if model is None:
        model = model_config(
            size, modalities=tuple(modalities or DEFAULT_MODALITIES), **(model_overrides or {})
        )
    return convert_gram_release(state, model, allow_missing=allow_missing)


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


def convert(
    fmt: str,
    input_path: str,
    output: str,
    *,
    config=None,
    size: str | None = None,
    modalities: Sequence[str] | None = None,
    allow_missing: bool = False,
    model_overrides: dict | None = None,
) -> pathlib.Path:
    """Converts ``input_path`` and writes ``output/params`` (or ``output`` if it ends in
    ``.msgpack``) and ``conversion_report.txt`` beside it; prints the path and the report.

    ``config``: a run config (ml_collections, unprepared), whose prepared ``model`` is the target
    of ``--format gram``. Returns the written path (what ``config.model_init`` takes).
    Raises ConversionRefused (one line naming the file or argument) on bad input.
    """
    try:
        model = None
        if config is not None:
            # lazy: prepare imports the model and data configs (JAX); --help stays light.
            from gram_jax.config import prepare  # noqa: PLC0415

            model = prepare(config, count_data=False).model
        params, report = convert_file(
            fmt,
            input_path,
            size=size,
            modalities=modalities,
            allow_missing=allow_missing,
            model_overrides=model_overrides,
            model=model,
        )
        target = save_params(params, output)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, OSError) as exc:
        # The messages name the file and what was expected; a traceback adds nothing for a user.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConversionRefused(message) from exc
    summary = report.summary()
    if report.skipped:
        summary += "\nskipped keys: " + ", ".join(report.skipped)
    folder = target.parent
    (folder / "conversion_report.txt").write_text(summary + "\n")
    print(f"wrote {target}\n{summary}")
    return target
