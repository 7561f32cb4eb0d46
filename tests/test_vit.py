"""The EVA-compatible vision tower: shapes, dtypes, determinism, drop-path, masks, scan/remat.

Numerical parity with timm's EVA lives in tests/test_convert_eva.py (it needs torch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax import parallel
from gram_jax.models import layers
from gram_jax.models.vit import (
    VisionTransformer,
    drop_path_rates,
    resize_pos_embed,
    vit_config,
)


def _frames(b=2, f=3, size=56, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, f, size, size, 3), jnp.float32)


def _model(**overrides):
    return VisionTransformer(vit_config("tiny", **overrides), rngs=nnx.Rngs(params=0, dropout=1))


@nnx.jit(static_argnames="train")
def _run(model, frames, frame_mask=None, train=False):
    # One compiled program per config (cached on the model's graph); dropout state flows back.
    return model(frames, train=train, frame_mask=frame_mask)


def test_shapes_and_float32_outputs():
    model = _model()
    out = _run(model, _frames())
    # tiny: 56 / 14 = 4x4 patches + CLS, width 64
    assert out.cls.shape == (2, 3, 64) and out.cls.dtype == jnp.float32
    assert out.tokens.shape == (2, 3, 17, 64) and out.tokens.dtype == jnp.float32
    assert out.pooled.shape == (2, 64) and out.pooled.dtype == jnp.float32
    np.testing.assert_allclose(out.cls, out.tokens[:, :, 0], rtol=0, atol=0)
    np.testing.assert_allclose(out.pooled, out.cls.mean(axis=1), rtol=1e-6, atol=1e-6)
    assert np.isfinite(np.asarray(out.tokens)).all()


def test_conv_stem_and_mean_pool():
    """A stem of two 3x3 stride-2 convs gives a (28/4)^2 = 7x7 token grid; 'mean' pools patches."""
    model = _model(patch_size=4, stem_channels=(8, 16), image_size=28, pool="mean")
    frames = _frames(size=28)
    out = _run(model, frames)
    assert out.tokens.shape == (2, 3, 1 + 49, 64)
    np.testing.assert_allclose(out.cls, out.tokens[:, :, 1:].mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.pooled, out.cls.mean(axis=1), rtol=1e-5, atol=1e-6)
    # The first conv against an independent NumPy 3x3 stride-2 'SAME' convolution (TF padding:
    # pad 0 before, 1 after for an even size) + GELU.
    x = np.asarray(frames[0, 0], np.float64)
    kernel, bias = (
        np.asarray(v[...], np.float64) for v in (model.stem[0].kernel, model.stem[0].bias)
    )
    padded = np.pad(x, ((0, 1), (0, 1), (0, 0)))
    want = np.zeros((14, 14, 8))
    for i in range(14):
        for j in range(14):
            window = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            want[i, j] = np.einsum("hwc,hwco->o", window, kernel) + bias
    want = np.asarray(jax.nn.gelu(jnp.asarray(want), approximate=False))
    got = model.stem[0](frames[0, :1])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Gradients reach the stem.
    grads = nnx.grad(lambda m: jnp.sum(m(frames).pooled ** 2))(model)
    assert float(jnp.abs(grads.stem[0].kernel[...]).sum()) > 0
    with pytest.raises(ValueError, match="stride 4, but patch_size is 14"):
        vit_config("tiny", stem_channels=(8, 16))
    with pytest.raises(ValueError, match="pool must be 'cls' or 'mean'"):
        vit_config("tiny", pool="max")


def test_bf16_compute_keeps_float32_params_and_stays_close():
    f32 = _model()
    bf16 = _model(dtype=jnp.bfloat16)
    params = nnx.state(bf16, nnx.Param)
    dtypes = {v.dtype for v in jax.tree.leaves(params)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    out16, out32 = _run(bf16, _frames()), _run(f32, _frames())
    assert out16.tokens.dtype == jnp.bfloat16
    assert out16.cls.dtype == jnp.float32 and out16.pooled.dtype == jnp.float32
    # same seed -> same float32 params; bf16 matmuls change the result only by rounding
    err = float(jnp.max(jnp.abs(out16.tokens.astype(jnp.float32) - out32.tokens)))
    assert 0 < err < 0.15, err


def test_same_seed_same_model_and_repeatable_forward():
    a, b = _model(), _model()
    x = _frames()
    np.testing.assert_array_equal(_run(a, x).tokens, _run(b, x).tokens)
    np.testing.assert_array_equal(_run(a, x).tokens, _run(a, x).tokens)
    c = VisionTransformer(vit_config("tiny"), rngs=nnx.Rngs(params=1, dropout=1))
    assert not np.allclose(_run(a, x).tokens, _run(c, x).tokens)


def test_drop_path_is_off_at_eval_and_on_in_training():
    plain, dropping = _model(), _model(drop_path_rate=0.5)
    x = _frames()
    # eval: drop-path changes nothing (same params, same output as a model without it)
    np.testing.assert_array_equal(_run(plain, x).tokens, _run(dropping, x).tokens)
    # train: stochastic, and two calls draw different masks from the advancing dropout stream
    t1, t2 = _run(dropping, x, train=True).tokens, _run(dropping, x, train=True).tokens
    assert not np.allclose(t1, _run(plain, x).tokens)
    assert not np.allclose(t1, t2)
    # train mode with rate 0 is deterministic and equal to eval
    np.testing.assert_allclose(_run(plain, x, train=True).tokens, _run(plain, x).tokens, atol=1e-6)


def test_drop_path_rates_follow_the_linear_depth_rule():
    rates = drop_path_rates(0.4, 40)
    assert rates.shape == (40,) and rates[0] == 0.0 and np.isclose(rates[-1], 0.4)
    np.testing.assert_allclose(np.diff(rates), 0.4 / 39, rtol=1e-5)


def test_frame_mask_excludes_padded_frames_from_the_mean():
    model = _model()
    x = _frames()
    mask = jnp.array([[True, True, False], [True, False, False]])
    out = _run(model, x, frame_mask=mask)
    np.testing.assert_allclose(out.pooled[0], out.cls[0, :2].mean(0), atol=1e-6)
    np.testing.assert_allclose(out.pooled[1], out.cls[1, 0], atol=1e-6)
    # content of masked frames does not leak into the pooled vector
    x2 = x.at[0, 2].set(100.0).at[1, 1:].set(-7.0)
    np.testing.assert_allclose(_run(model, x2, frame_mask=mask).pooled, out.pooled, atol=1e-6)


def test_scan_unrolled_and_remat_give_the_same_values_and_grads():
    x = _frames(b=1, f=2)
    outs, grads = [], []
    for scan, remat in [(True, "none"), (False, "none"), (True, "full"), (False, "dots")]:
        model = _model(scan_layers=scan, remat_policy=remat)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            m = nnx.merge(graphdef, p, rest, copy=True)
            return jnp.sum(m(x).pooled ** 2)

        value, grad = jax.jit(jax.value_and_grad(loss))(params)
        outs.append(value)
        grads.append(grad)
    for value, grad in zip(outs[1:], grads[1:], strict=True):
        np.testing.assert_allclose(value, outs[0], rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grad, grads[0]
        )


def test_params_carry_logical_axes_with_a_layer_axis_on_blocks():
    model = _model()
    params = nnx.state(model, nnx.Param)
    names = nnx.to_pure_dict(layers.logical_axes_tree(params))
    assert names["patch_embed"]["kernel"] == ("patch", "patch", "channels", "embed")
    assert names["pos_embed"] == ("length", "embed")
    assert names["blocks"]["attn"]["query"]["kernel"] == ("layers", "embed", "heads", "kv")
    assert names["blocks"]["mlp"]["fc1"]["kernel"] == ("layers", "embed", "mlp")
    for path, value in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]:
        leaf_names = names
        for k in path:
            leaf_names = leaf_names[k.key]
        assert len(leaf_names) == value.ndim, path
    # giant tower: ~1.0 B parameters (EVA01-CLIP-g/14 visual), built abstractly
    giant = nnx.eval_shape(lambda: VisionTransformer(vit_config("giant"), rngs=nnx.Rngs(0)))
    count = sum(v.size for v in jax.tree.leaves(nnx.state(giant, nnx.Param)))
    assert 1.0e9 < count < 1.02e9, count


def test_other_image_sizes_interpolate_the_position_table():
    model = _model()
    out = _run(model, _frames(size=84))
    assert out.tokens.shape == (2, 3, 1 + 36, 64)
    table = model.pos_embed[...]
    np.testing.assert_array_equal(resize_pos_embed(table, (4, 4)), table)
    resized = resize_pos_embed(table, (6, 5))
    assert resized.shape == (31, 64)
    np.testing.assert_array_equal(resized[0], table[0])  # CLS entry kept


@pytest.mark.parametrize(
    "shape, message",
    [((2, 56, 56, 3), r"\[B, F, H, W, 3\]"), ((1, 1, 50, 56, 3), "multiples of 14")],
)
def test_bad_input_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        _model()(jnp.zeros(shape))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_config("huge")
    with pytest.raises(ValueError, match="unknown keys"):
        vit_config("tiny", widht=3)
    with pytest.raises(ValueError, match="remat_policy"):
        vit_config("tiny", remat_policy="sometimes")


def test_sharded_forward_on_eight_devices_matches_single_device():
    """Params sharded by their logical axes (fsdp x model), batch over (data, fsdp)."""
    model = _model()
    frames = _frames(b=4, f=1)
    expected = _run(model, frames).tokens
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shardings = parallel.state_shardings(params, mesh)
    # [layers, embed, heads, kv]: FSDP over the width, tensor-parallel over the heads
    expected_spec = jax.sharding.PartitionSpec(None, "fsdp", "model", None)
    assert shardings["blocks"]["attn"]["query"]["kernel"].spec == expected_spec
    nnx.replace_by_pure_dict(params, jax.device_put(nnx.to_pure_dict(params), shardings))
    frames = jax.device_put(frames, parallel.batch_sharding(mesh, frames.ndim))

    @jax.jit
    def forward(p, x):
        with layers.logical_sharding(mesh, parallel.LOGICAL_AXIS_RULES):
            return nnx.merge(graphdef, p, rest, copy=True)(x).tokens

    out = forward(params, frames)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, expected, atol=2e-5)
