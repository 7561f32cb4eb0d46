"""Released-GRAM key mapping: a state dict with the ispamm/GRAM names and tiny shapes, built from
real PyTorch modules where they exist (HF BertForMaskedLM with cross-attention, timm's EVA, the
BEATs restatement of tests/beats_torch_reference.py) plus the reference's own heads."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax.convert.gram_release import convert_gram_release, load_gram_release, normalize_keys
from gram_jax.models.gram import GramModel, model_config

pytestmark = pytest.mark.torch
H = 64  # tiny BERT width = fusion width
MODALITIES = ("text", "video", "audio", "subtitle")


def _release_state_dict(max_frames=2):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    timm_eva = pytest.importorskip("timm.models.eva")
    from beats_torch_reference import BEATsReference, beats_cfg  # imports torch (optional)

    torch.manual_seed(0)
    sd = {}
    bert_cfg = transformers.BertConfig(
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        is_decoder=True,
        add_cross_attention=True,
    )
    for k, v in transformers.BertForMaskedLM(bert_cfg).state_dict().items():
        sd[f"multimodal_encoder.{k}"] = v
    eva = timm_eva.Eva(
        img_size=56,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=279 / 64,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
    )
    for k, v in eva.state_dict().items():
        sd[f"vision_encoder.visual.{k}"] = v
    sd["vision_encoder.logit_scale"] = torch.tensor(4.6)  # EVA-CLIP text side: unused
    beats = BEATsReference(
        beats_cfg(
            embed_dim=32,
            encoder_layers=2,
            encoder_embed_dim=64,
            encoder_ffn_embed_dim=128,
            encoder_attention_heads=4,
            conv_pos=16,
            conv_pos_groups=4,
            num_buckets=32,
            max_distance=64,
        )
    )
    for k, v in beats.state_dict().items():
        sd[f"audio_encoder.{k}"] = v
    g = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    for head in "tsvad":
        sd[f"contra_head_{head}.linear.weight"] = rand(512, 64)
    sd["contra_head_va.weight"], sd["contra_head_va.bias"] = rand(512, 128), rand(512)
    sd["contra_temp"] = torch.tensor(0.05)
    sd["itm_head.linear1.weight"], sd["itm_head.linear1.bias"] = rand(H, H), rand(H)
    sd["itm_head.layernorm.weight"], sd["itm_head.layernorm.bias"] = rand(H), rand(H)
    sd["itm_head.linear2.weight"], sd["itm_head.linear2.bias"] = rand(2, H), rand(2)
    for ref in ("vision", "audio", "subtitle"):
        sd[f"hidden_trans_{ref}_multimodal.0.weight"] = rand(H, 64)
        sd[f"hidden_trans_{ref}_multimodal.0.bias"] = rand(H)
        sd[f"hidden_trans_{ref}_multimodal.1.weight"] = rand(H)
        sd[f"hidden_trans_{ref}_multimodal.1.bias"] = rand(H)
        sd[f"{ref}_type_embeddings"] = rand(1, 1, H)
    sd["vision_frame_embedding"] = rand(1, max_frames, H)
    sd["audio_frame_embedding"] = rand(1, 1, H)
    return sd


def _config():
    return model_config(
        "tiny",
        modalities=MODALITIES,
        matching=dict(condition_modalities=("video", "audio", "subtitle")),
        vision=dict(max_frames=8),
        audio=dict(max_clips=2),
    )


@pytest.fixture(scope="module")
def converted():
    sd = _release_state_dict()
    params, report = convert_gram_release(sd, _config())
    return sd, params, report


def test_every_parameter_is_filled_and_unused_keys_are_named(converted):
    _, _, report = converted
    assert report.missing == []
    unused = set(report.unused)
    assert {"contra_head_d.linear.weight", "contra_head_va.weight", "contra_head_va.bias"} <= unused
    assert "vision_encoder.logit_scale" in unused
    assert any(k.startswith("multimodal_encoder.cls.") for k in unused)  # MLM head
    assert not any(k.startswith("audio_encoder.encoder.layers.0.fc1") for k in unused)
    assert any("nearest-resized from 2 to 8" in n for n in report.notes)


def test_values_land_where_the_reference_reads_them(converted):
    sd, params, _ = converted
    t = lambda k: sd[k].detach().numpy()  # noqa: E731
    np.testing.assert_array_equal(
        params["heads"]["text"]["proj"]["kernel"], t("contra_head_t.linear.weight").T
    )
    np.testing.assert_array_equal(
        params["heads"]["subtitle"]["proj"]["kernel"], t("contra_head_s.linear.weight").T
    )
    np.testing.assert_array_equal(
        params["match_head"]["out"]["kernel"], t("itm_head.linear2.weight").T
    )
    cond = params["condition_tokens"]
    np.testing.assert_array_equal(
        cond["video"]["linear"]["kernel"], t("hidden_trans_vision_multimodal.0.weight").T
    )
    np.testing.assert_array_equal(cond["audio"]["type_embedding"], t("audio_type_embeddings")[0, 0])
    frames = t("vision_frame_embedding")[0]
    np.testing.assert_array_equal(
        cond["video"]["frame_embedding"], frames[[0, 0, 0, 0, 1, 1, 1, 1]]
    )
    np.testing.assert_array_equal(
        cond["audio"]["frame_embedding"], np.repeat(t("audio_frame_embedding")[0], 2, 0)
    )
    np.testing.assert_allclose(params["contra_temperature"]["log_temperature"], math.log(0.05))
    q = t("multimodal_encoder.bert.encoder.layer.1.crossattention.self.query.weight")
    np.testing.assert_array_equal(
        params["bert"]["layers"]["cross_attn"]["query"]["kernel"][1], q.T.reshape(H, 4, 16)
    )


def test_round_trip_into_gram_model_and_matching_head_parity(converted):
    torch = pytest.importorskip("torch")
    sd, params, _ = converted
    model = load_gram_release(GramModel(_config(), rngs=nnx.Rngs(0)), params)
    np.testing.assert_allclose(model.temperature(), 0.05, rtol=1e-6)
    cls = np.random.default_rng(0).normal(size=(3, H)).astype(np.float32)
    # the reference's Match_head: linear1 -> erf GELU -> LayerNorm(1e-12) -> linear2
    with torch.no_grad():
        h = torch.nn.functional.linear(
            torch.tensor(cls), sd["itm_head.linear1.weight"], sd["itm_head.linear1.bias"]
        )
        h = torch.nn.functional.gelu(h)
        h = torch.nn.functional.layer_norm(
            h, (H,), sd["itm_head.layernorm.weight"], sd["itm_head.layernorm.bias"], eps=1e-12
        )
        expect = torch.nn.functional.linear(
            h, sd["itm_head.linear2.weight"], sd["itm_head.linear2.bias"]
        ).numpy()
    np.testing.assert_allclose(model.match_head(jnp.asarray(cls)), expect, atol=1e-5)


def test_old_vast_names_are_renamed_and_shape_errors_name_the_key():
    sd = {"module.video_frame_embedding": 1, "module.evaclip_model.visual.cls_token": 2}
    assert sorted(normalize_keys(sd)) == [
        "vision_encoder.visual.cls_token",
        "vision_frame_embedding",
    ]
    bad = _release_state_dict()
    bad["contra_head_t.linear.weight"] = bad["contra_head_t.linear.weight"][:, :10]
    with pytest.raises(ValueError, match="contra_head_t.linear.weight"):
        convert_gram_release(bad, _config())
    partial = {k: v for k, v in _release_state_dict().items() if not k.startswith("itm_head.")}
    with pytest.raises(KeyError, match="match_head.dense.kernel"):
        convert_gram_release(partial, _config())
    params, report = convert_gram_release(partial, _config(), allow_missing=True)
    assert "match_head.out.bias" in report.missing and "bert" in params
