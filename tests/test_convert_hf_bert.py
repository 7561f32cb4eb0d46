"""HF BERT key mapping without PyTorch: prefixes, aliases, and errors that name the key."""

import numpy as np
import pytest

from gram_jax.convert.hf_bert import convert_hf_bert, detect_prefix
from gram_jax.models.bert import bert_config

CFG = bert_config("tiny", max_positions=16, vocab_size=50)  # hidden 64, 2 layers, mlp 256


def _hf_state_dict(prefix="", cross=False, layers=2, norm_names=("weight", "bias")):
    """Hugging Face BertModel names with the shapes of CFG (PyTorch Linear is [out, in])."""
    rng = np.random.default_rng(0)
    h, m = 64, 256
    shapes = {
        "embeddings.word_embeddings.weight": (50, h),
        "embeddings.position_embeddings.weight": (16, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        f"embeddings.LayerNorm.{norm_names[0]}": (h,),
        f"embeddings.LayerNorm.{norm_names[1]}": (h,),
        "pooler.dense.weight": (h, h),
        "pooler.dense.bias": (h,),
    }
    blocks = ["attention"] + (["crossattention"] if cross else [])
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for blk in blocks:
            for proj in ("query", "key", "value"):
                shapes[f"{p}{blk}.self.{proj}.weight"] = (h, h)
                shapes[f"{p}{blk}.self.{proj}.bias"] = (h,)
            shapes[f"{p}{blk}.output.dense.weight"] = (h, h)
            shapes[f"{p}{blk}.output.dense.bias"] = (h,)
            for n in norm_names:
                shapes[f"{p}{blk}.output.LayerNorm.{n}"] = (h,)
        shapes[f"{p}intermediate.dense.weight"] = (m, h)
        shapes[f"{p}intermediate.dense.bias"] = (m,)
        shapes[f"{p}output.dense.weight"] = (h, m)
        shapes[f"{p}output.dense.bias"] = (h,)
        for n in norm_names:
            shapes[f"{p}output.LayerNorm.{n}"] = (h,)
    return {prefix + k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_mapping_splits_heads_and_stacks_layers():
    sd = _hf_state_dict()
    params, report = convert_hf_bert(sd, CFG)
    assert report.unused == ["pooler.dense.weight", "pooler.dense.bias"]
    assert report.missing == []
    q = params["layers"]["attn"]["query"]
    assert q["kernel"].shape == (2, 64, 4, 16) and q["bias"].shape == (2, 4, 16)
    w = sd["encoder.layer.1.attention.self.query.weight"]
    np.testing.assert_array_equal(q["kernel"][1], w.T.reshape(64, 4, 16))
    out = sd["encoder.layer.0.attention.output.dense.weight"]
    np.testing.assert_array_equal(
        params["layers"]["attn"]["out"]["kernel"][0], out.T.reshape(4, 16, 64)
    )
    np.testing.assert_array_equal(
        params["layers"]["mlp"]["fc1"]["kernel"][0],
        sd["encoder.layer.0.intermediate.dense.weight"].T,
    )


def test_prefixes_aliases_and_cross_attention_keys():
    assert detect_prefix(_hf_state_dict(prefix="bert.")) == "bert."
    both = {**_hf_state_dict(prefix="a."), **_hf_state_dict(prefix="b.")}
    with pytest.raises(KeyError, match="several BERT"):
        detect_prefix(both)
    with pytest.raises(KeyError, match="no BERT found"):
        detect_prefix({"foo.weight": np.zeros(1)})
    # TF-era gamma/beta LayerNorm names
    params, _ = convert_hf_bert(_hf_state_dict(norm_names=("gamma", "beta")), CFG)
    assert params["layers"]["mlp_norm"]["scale"].shape == (2, 64)
    # cross-attention weights: used by a fusion config, reported unused by a plain one
    cross = _hf_state_dict(cross=True)
    _, plain = convert_hf_bert(cross, CFG)
    assert "encoder.layer.0.crossattention.self.key.weight" in plain.unused
    fusion = bert_config("tiny", max_positions=16, vocab_size=50, cross_attention=True)
    params, report = convert_hf_bert(cross, fusion)
    assert report.missing == [] and params["layers"]["cross_norm"]["bias"].shape == (2, 64)
    # a plain BERT into a fusion config: cross-attention stays missing, named
    with pytest.raises(KeyError, match="layers.cross_attn.query.kernel"):
        convert_hf_bert(_hf_state_dict(), fusion)
    _, report = convert_hf_bert(_hf_state_dict(), fusion, allow_missing=True)
    assert "layers.cross_attn.value.bias" in report.missing


def test_errors_name_the_key():
    sd = _hf_state_dict()
    sd["encoder.layer.1.output.dense.bias"] = np.zeros(63, np.float32)
    with pytest.raises(ValueError, match=r"encoder\.layer\.1\.output\.dense\.bias.*mlp\.fc2\.bias"):
        convert_hf_bert(sd, CFG)
    sd = _hf_state_dict()
    sd["encoder.layer.0.attention.self.query.bias"] = np.zeros(63, np.float32)
    with pytest.raises(ValueError, match="encoder.layer.0.attention.self.query.bias"):
        convert_hf_bert(sd, CFG)
    sd = _hf_state_dict()
    sd["embeddings.word_embeddings.weight"] = np.zeros((49, 64), np.float32)
    with pytest.raises(ValueError, match="embeddings.word_embeddings.weight"):
        convert_hf_bert(sd, CFG)
    with pytest.raises(ValueError, match="encoder.layer.2.*has 2 layers"):
        convert_hf_bert(_hf_state_dict(layers=3), CFG)
    sd = _hf_state_dict()
    del sd["encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(KeyError, match=r"layers \[1\]"):
        convert_hf_bert(sd, CFG)
