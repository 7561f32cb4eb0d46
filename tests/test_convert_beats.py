"""BEATs checkpoint -> AudioTransformer: key mapping, cfg translation and numerical parity.

Verified here:
- without torch: a state dict synthesised with the real key names and shapes of
  BEATs_iter3_plus_AS2M (the `model` entry of the public checkpoint, as read in microsoft/unilm
  beats/) fills every parameter of the base tower, values land where they belong (transposes and
  head splits), extra keys are reported by name, bad shapes raise naming the key;
- with torch: tests/beats_torch_reference.py (an independent PyTorch restatement of the public
  BEATs forward pass, keeping its parameter names and its float16-guard arithmetic) has exactly the
  synthesised key set, and our tower matches it with random weights (biases, norms, gates and the
  relative-position table perturbed) to <= 1e-4 max abs difference in float32, at a tiny shape and
  at the real base shape (12 x 768, one clip of 1024 frames x 64 mel bins, as GRAM feeds it).
Not verified: parity against the original microsoft/unilm module itself (it imports torchaudio,
which does not install beside torch 2.14 here) and against real BEATs weights (none are
installable offline).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax.convert.beats import audio_config_from_beats_cfg, convert_beats, load_beats
from gram_jax.models.audio import AudioTransformer, audio_config

# The public checkpoint's cfg for BEATs_iter3_plus_AS2M (architecture keys).
BASE_CFG = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12,
    encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
    activation_fn="gelu", layer_norm_first=False, deep_norm=True, conv_pos=128,
    conv_pos_groups=16, relative_position_embedding=True, num_buckets=320, max_distance=800,
    gru_rel_pos=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
)  # fmt: skip
TINY_CFG = dict(
    BASE_CFG, embed_dim=32, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
    encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64,
)  # fmt: skip


def synthetic_state_dict(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under the real BEATs key names and shapes (PyTorch layouts)."""
    rng = np.random.default_rng(seed)
    p, e, w = cfg["input_patch_size"], cfg["embed_dim"], cfg["encoder_embed_dim"]
    f, h, k = cfg["encoder_ffn_embed_dim"], cfg["encoder_attention_heads"], cfg["conv_pos"]
    shapes = {
        "patch_embedding.weight": (e, 1, p, p),
        "layer_norm.weight": (e,),
        "layer_norm.bias": (e,),
        "post_extract_proj.weight": (w, e),
        "post_extract_proj.bias": (w,),
        "encoder.pos_conv.0.bias": (w,),
        "encoder.pos_conv.0.weight_g": (1, 1, k),
        "encoder.pos_conv.0.weight_v": (w, w // cfg["conv_pos_groups"], k),
        "encoder.layer_norm.weight": (w,),
        "encoder.layer_norm.bias": (w,),
    }
    for i in range(cfg["encoder_layers"]):
        a = f"encoder.layers.{i}.self_attn."
        shapes[a + "grep_a"] = (1, h, 1, 1)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[a + proj + ".weight"] = (w, w)
            shapes[a + proj + ".bias"] = (w,)
        shapes[a + "relative_attention_bias.weight"] = (cfg["num_buckets"], h)
        shapes[a + "grep_linear.weight"] = (8, w // h)
        shapes[a + "grep_linear.bias"] = (8,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"encoder.layers.{i}.{norm}.weight"] = (w,)
            shapes[f"encoder.layers.{i}.{norm}.bias"] = (w,)
        shapes[f"encoder.layers.{i}.fc1.weight"] = (f, w)
        shapes[f"encoder.layers.{i}.fc1.bias"] = (f,)
        shapes[f"encoder.layers.{i}.fc2.weight"] = (w, f)
        shapes[f"encoder.layers.{i}.fc2.bias"] = (w,)
    state = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}
    table = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    for i in range(1, cfg["encoder_layers"]):  # one shared table, listed under every layer
        state[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = table
    return state


def test_cfg_translation_and_unsupported_variants():
    cfg = audio_config_from_beats_cfg(BASE_CFG)
    base = audio_config("base", dropout_rate=0.0, attn_dropout_rate=0.0)
    assert cfg == base
    with pytest.raises(ValueError, match="layer_norm_first"):
        audio_config_from_beats_cfg(dict(BASE_CFG, layer_norm_first=True))
    with pytest.raises(ValueError, match="gru_rel_pos"):
        audio_config_from_beats_cfg(dict(BASE_CFG, gru_rel_pos=False))


def test_real_key_names_fill_every_base_parameter():
    state = synthetic_state_dict(BASE_CFG)
    state["predictor.weight"] = np.zeros((527, 768), np.float32)  # fine-tuned checkpoints
    state["predictor.bias"] = np.zeros((527,), np.float32)
    cfg = audio_config_from_beats_cfg(BASE_CFG)
    params, report = convert_beats(state, cfg)
    assert report.unused == ["predictor.weight", "predictor.bias"]
    assert report.missing == [] and report.skipped == [] and report.notes == []
    attn = params["layers"]["self_attn"]
    np.testing.assert_array_equal(
        attn["query"]["kernel"][3],
        state["encoder.layers.3.self_attn.q_proj.weight"].T.reshape(768, 12, 64),
    )
    np.testing.assert_array_equal(
        attn["out"]["kernel"][11],
        state["encoder.layers.11.self_attn.out_proj.weight"].T.reshape(12, 64, 768),
    )
    np.testing.assert_array_equal(
        attn["grep_a"][5], state["encoder.layers.5.self_attn.grep_a"].reshape(12)
    )
    np.testing.assert_array_equal(
        params["layers"]["mlp"]["fc2"]["kernel"][0], state["encoder.layers.0.fc2.weight"].T
    )
    np.testing.assert_array_equal(
        params["patch_embedding"]["kernel"][:, :, 7], state["patch_embedding.weight"][7, 0]
    )
    np.testing.assert_array_equal(
        params["pos_conv"]["weight_v"][:, 2, 5], state["encoder.pos_conv.0.weight_v"][5, 2, :]
    )
    np.testing.assert_array_equal(
        params["rel_pos_bias"], state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    )


def test_prefix_weight_norm_names_and_errors():
    state = synthetic_state_dict(TINY_CFG, seed=1)
    cfg = audio_config_from_beats_cfg(TINY_CFG)
    reference, _ = convert_beats(state, cfg)
    # a BEATs module inside a larger checkpoint (GRAM's `audio_encoder.`), newer torch weight norm
    renamed = {}
    for key, value in state.items():
        key = key.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
        key = key.replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1")
        renamed["audio_encoder." + key] = value
    renamed["text_encoder.x"] = np.zeros(3, np.float32)
    params, report = convert_beats(renamed, cfg, prefix="audio_encoder.")
    assert report.skipped == ["text_encoder.x"] and report.unused == []
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    # a layer copy of the relative table that differs from layer 0's is reported, not used
    other = dict(state)
    other["encoder.layers.1.self_attn.relative_attention_bias.weight"] = np.ones(
        (32, 4), np.float32
    )
    _, report = convert_beats(other, cfg)
    assert report.unused == ["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    bad = dict(state)
    bad["encoder.layers.1.fc1.weight"] = np.zeros((128, 60), np.float32)
    with pytest.raises(ValueError, match=r"'encoder\.layers\.1\.fc1\.weight'"):
        convert_beats(bad, cfg)
    bad = dict(state)
    bad["encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((64, 32), np.float32)
    with pytest.raises(ValueError, match=r"'encoder\.layers\.0\.self_attn\.q_proj\.weight'"):
        convert_beats(bad, cfg)
    partial = {k: v for k, v in state.items() if not k.startswith("encoder.layers.1.fc2")}
    with pytest.raises(KeyError, match=r"fc2\.bias.*layers \[1\]|layers \[1\]"):
        convert_beats(partial, cfg)


def _torch_parity(cfg_dict: dict, fbank: np.ndarray) -> float:
    torch = pytest.importorskip("torch")
    from beats_torch_reference import BEATsReference  # imports torch (optional extra)

    torch.manual_seed(0)
    reference = BEATsReference(cfg_dict).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.ndim == 1 or "grep" in name or "relative_attention_bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    state = reference.state_dict()
    assert set(state) == set(synthetic_state_dict(cfg_dict))
    cfg = audio_config_from_beats_cfg(cfg_dict)
    params, report = convert_beats(state, cfg)
    assert report.unused == [] and report.missing == []
    model = load_beats(AudioTransformer(cfg, rngs=nnx.Rngs(0)), params)
    b, c = fbank.shape[:2]
    with torch.no_grad():
        expected = reference(torch.from_numpy(fbank.reshape(b * c, *fbank.shape[2:]))).numpy()
    tokens = np.asarray(model(jnp.asarray(fbank)).tokens).reshape(expected.shape)
    return float(np.max(np.abs(tokens - expected)))


@pytest.mark.torch
@pytest.mark.parametrize("mel_bins", [64, 128])
def test_parity_with_torch_beats_tiny(mel_bins):
    fbank = np.random.default_rng(0).standard_normal((2, 2, 128, mel_bins)).astype(np.float32)
    err = _torch_parity(TINY_CFG, fbank)
    assert err <= 1e-4, err


@pytest.mark.torch
def test_parity_with_torch_beats_at_the_real_base_shape():
    fbank = np.random.default_rng(1).standard_normal((1, 1, 1024, 64)).astype(np.float32) * 0.5
    err = _torch_parity(BASE_CFG, fbank)
    assert err <= 1e-4, err
