"""timm EVA / EVA-CLIP visual tower -> VisionTransformer: parity and key mapping.

Verified here (oracle: timm's ``eva_giant_patch14_clip_224`` built offline with random weights,
``pretrained=False``; every bias and LayerNorm parameter is perturbed so that a wrong mapping
cannot hide behind timm's zero/one initialisation):
- the real g/14 block shape (width 1408, 16 heads, MLP 6144, patch 14, 224x224) at depth 2:
  tokens after the final LayerNorm, max abs difference <= 1e-4 in float32;
- position-table interpolation at other image sizes against timm's dynamic-size forward;
- the EVA-CLIP ``visual.`` naming (text tower skipped, the CLIP projection ``head`` reported);
- errors that name the offending key;
- (slow) the full 40-layer g/14 tower, one 224x224 image, same tolerance.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax.convert.eva import convert_eva, load_eva
from gram_jax.convert.torch_state import build_with_params
from gram_jax.models.vit import VisionTransformer, vit_config

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.torch


def _timm_eva(seed=0, perturb=True, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model(
        "eva_giant_patch14_clip_224", pretrained=False, num_classes=0, **kwargs
    ).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:  # biases and LayerNorm scales/shifts: zeros/ones at init
                    p.add_(0.1 * torch.randn_like(p))
    return model


def _ours(torch_model, cfg):
    params, report = convert_eva(torch_model.state_dict(), cfg)
    model = VisionTransformer(cfg, rngs=nnx.Rngs(0))
    return load_eva(model, params), report


def _compare(torch_model, model, images):
    with torch.no_grad():
        ref = torch_model.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    out = model(jnp.asarray(images)[:, None])
    tokens = np.asarray(out.tokens[:, 0])
    assert tokens.shape == ref.shape
    return float(np.max(np.abs(tokens - ref)))


def test_parity_with_timm_at_the_real_g14_block_shape():
    torch_model = _timm_eva(depth=2)
    cfg = vit_config("giant", depth=2)
    model, report = _ours(torch_model, cfg)
    assert report.unused == [] and report.missing == [] and report.skipped == []
    images = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    err = _compare(torch_model, model, images)
    assert err <= 1e-4, err


@pytest.mark.parametrize("height, width", [(84, 70), (28, 42)])
def test_position_table_interpolation_matches_timm(height, width):
    torch_model = _timm_eva(depth=1, embed_dim=64, num_heads=4, img_size=56, dynamic_img_size=True)
    cfg = vit_config("tiny", depth=1, mlp_dim=int(64 * 6144 / 1408))
    model, _ = _ours(torch_model, cfg)
    images = np.random.default_rng(1).standard_normal((2, height, width, 3)).astype(np.float32)
    err = _compare(torch_model, model, images)
    assert err <= 1e-4, err


def test_eva_clip_visual_prefix_and_report():
    torch_model = _timm_eva(depth=1, embed_dim=64, num_heads=4, img_size=56, perturb=False)
    plain = torch_model.state_dict()
    clip = {f"visual.{k}": v for k, v in plain.items()}
    clip["visual.head.weight"] = torch.zeros(32, 64)  # EVA-CLIP's projection to the joint space
    clip["text.token_embedding.weight"] = torch.zeros(10, 8)
    clip["logit_scale"] = torch.tensor(4.6)
    cfg = vit_config("tiny", depth=1, mlp_dim=int(64 * 6144 / 1408))
    params, report = convert_eva(clip, cfg)
    assert report.unused == ["visual.head.weight"]
    assert report.skipped == ["text.token_embedding.weight", "logit_scale"]
    reference, _ = convert_eva(plain, cfg)
    flat, tree = jax.tree_util.tree_flatten(params)
    ref_flat, ref_tree = jax.tree_util.tree_flatten(reference)
    assert tree == ref_tree
    for value, ref in zip(flat, ref_flat, strict=True):
        np.testing.assert_array_equal(value, ref)


def test_shape_and_missing_key_errors_name_the_key():
    torch_model = _timm_eva(depth=2, embed_dim=64, num_heads=4, img_size=56, perturb=False)
    state = dict(torch_model.state_dict())
    cfg = vit_config("tiny", mlp_dim=int(64 * 6144 / 1408))
    bad = dict(state)
    bad["blocks.1.mlp.fc1.weight"] = torch.zeros(7, 64)
    with pytest.raises(ValueError, match=r"'blocks\.1\.mlp\.fc1\.weight'"):
        convert_eva(bad, cfg)
    bad = dict(state)
    bad["blocks.0.attn.qkv.weight"] = torch.zeros(3 * 64, 32)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight"):
        convert_eva(bad, cfg)
    partial = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(KeyError, match=r"norm\.scale"):
        convert_eva(partial, cfg)
    params, report = convert_eva(partial, cfg, allow_missing=True)
    assert report.missing == ["norm.scale"]
    with pytest.raises(ValueError, match="depth 1"):
        convert_eva(state, vit_config("tiny", depth=1, mlp_dim=int(64 * 6144 / 1408)))


@pytest.mark.slow
def test_parity_full_giant_tower_one_image():
    """The whole EVA01-CLIP-g/14 visual tower (40 x 1408, ~1.0 B params), one 224x224 image.

    About 12 GB of host memory at peak (timm model, converted copy, JAX copy); prints timings.
    """
    start = time.perf_counter()
    torch_model = _timm_eva(perturb=True)
    images = np.random.default_rng(2).standard_normal((1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    built = time.perf_counter()
    params, report = convert_eva(torch_model.state_dict(), vit_config("giant"))
    del torch_model
    assert report.unused == [] and report.missing == []
    model = build_with_params(
        lambda: VisionTransformer(vit_config("giant"), rngs=nnx.Rngs(0)), params
    )
    del params
    tokens = np.asarray(model(jnp.asarray(images)[:, None]).tokens[:, 0])
    done = time.perf_counter()
    err = float(np.max(np.abs(tokens - ref)))
    print(f"giant: max abs diff {err:.2e}; timm {built - start:.0f} s; ours {done - built:.0f} s")
    assert err <= 1e-4, err
