"""The BEATs-compatible audio tower: shapes, dtypes, determinism, dropout, clip masks, scan/remat.

Numerical parity with a PyTorch BEATs (random weights, tiny and real base shapes) and the checkpoint
key mapping live in tests/test_convert_beats.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax import parallel
from gram_jax.models import layers
from gram_jax.models.audio import AudioTransformer, audio_config, relative_position_buckets


def _fbank(b=2, c=2, t=128, m=64, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, c, t, m), jnp.float32)


def _model(**overrides):
    return AudioTransformer(audio_config("tiny", **overrides), rngs=nnx.Rngs(params=0, dropout=1))


@nnx.jit(static_argnames="train")
def _run(model, fbank, clip_mask=None, train=False):
    # One compiled program per config (cached on the model's graph); dropout state flows back.
    return model(fbank, train=train, clip_mask=clip_mask)


@pytest.mark.parametrize("mel_bins", [64, 128])
def test_shapes_and_pooling(mel_bins):
    model = _model()
    out = _run(model, _fbank(m=mel_bins))
    tokens = (128 // 16) * (mel_bins // 16)
    assert out.tokens.shape == (2, 2, tokens, 64) and out.tokens.dtype == jnp.float32
    assert out.pooled.shape == (2, 64) and out.pooled.dtype == jnp.float32
    # mean over tokens, then over clips
    np.testing.assert_allclose(out.pooled, out.tokens.mean(axis=(1, 2)), atol=1e-5)
    assert np.isfinite(np.asarray(out.tokens)).all()


def test_bf16_compute_float32_params():
    f32, bf16 = _model(), _model(dtype=jnp.bfloat16)
    assert {v.dtype for v in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype("float32")}
    out16, out32 = _run(bf16, _fbank()), _run(f32, _fbank())
    assert out16.tokens.dtype == jnp.bfloat16 and out16.pooled.dtype == jnp.float32
    # post-LN outputs are O(1): bf16 rounding stays well below that
    err = float(jnp.max(jnp.abs(out16.tokens.astype(jnp.float32) - out32.tokens)))
    assert 0 < err < 0.25, err


def test_determinism_and_dropout_only_in_training():
    a, b = _model(), _model()
    x = _fbank()
    np.testing.assert_array_equal(_run(a, x).tokens, _run(b, x).tokens)
    np.testing.assert_array_equal(_run(a, x).tokens, _run(a, x).tokens)
    t1, t2 = _run(a, x, train=True).tokens, _run(a, x, train=True).tokens
    assert not np.allclose(t1, _run(a, x).tokens)  # BEATs dropout 0.1 is active in training
    assert not np.allclose(t1, t2)
    no_dropout = _model(dropout_rate=0.0, attn_dropout_rate=0.0)
    np.testing.assert_allclose(_run(no_dropout, x, train=True).tokens, _run(a, x).tokens, atol=1e-6)


def test_clip_mask_excludes_padded_clips():
    model = _model()
    x = _fbank(c=3)
    mask = jnp.array([[True, False, True], [False, True, False]])
    out = _run(model, x, clip_mask=mask)
    per_clip = out.tokens.mean(axis=2)
    np.testing.assert_allclose(out.pooled[0], per_clip[0, [0, 2]].mean(0), atol=1e-5)
    np.testing.assert_allclose(out.pooled[1], per_clip[1, 1], atol=1e-5)
    x2 = x.at[0, 1].set(5.0).at[1, 2].set(-3.0)
    np.testing.assert_allclose(_run(model, x2, clip_mask=mask).pooled, out.pooled, atol=1e-6)
    with pytest.raises(ValueError, match="clip_mask"):
        model(x, clip_mask=mask[:, :2])


def test_scan_unrolled_and_remat_agree_in_value_and_grad():
    x = _fbank(b=1, c=1, t=64, m=32)
    results = []
    for scan, remat in [(True, "none"), (False, "none"), (True, "full")]:
        model = _model(scan_layers=scan, remat_policy=remat)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            return jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(x).pooled ** 2)

        results.append(jax.jit(jax.value_and_grad(loss))(params))
    for value, grad in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grad, results[0][1]
        )


def test_both_positional_conv_implementations_agree():
    x = _fbank(b=1, c=2)
    conv, taps = _model(conv_pos_impl="conv"), _model(conv_pos_impl="taps")
    np.testing.assert_allclose(_run(conv, x).tokens, _run(taps, x).tokens, atol=2e-5)
    with pytest.raises(ValueError, match="conv_pos_impl"):
        audio_config("tiny", conv_pos_impl="fft")


def test_layer_grad_scale_changes_gradients_below_the_top_layer_only():
    x = _fbank(b=1, c=1, t=32, m=32)
    grads = []
    for scale in (1.0, 0.5):
        model = _model(layer_grad_scale=scale, dropout_rate=0.0, attn_dropout_rate=0.0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            return jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(x).pooled ** 2)

        grads.append(nnx.to_pure_dict(jax.grad(loss)(params)))
    full, half = grads
    fc1 = [g["layers"]["mlp"]["fc1"]["kernel"] for g in grads]
    # 2 layers: the top layer's own gradient is unchanged, the bottom one's halved, the stem's
    # (below both layers) quartered
    np.testing.assert_allclose(fc1[1][1], fc1[0][1], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fc1[1][0], 0.5 * fc1[0][0], rtol=1e-5, atol=1e-9)
    stem = [g["post_extract_proj"]["kernel"] for g in grads]
    np.testing.assert_allclose(stem[1], 0.25 * stem[0], rtol=1e-4, atol=1e-9)
    assert full.keys() == half.keys()


def test_relative_position_buckets_follow_the_bidirectional_log_rule():
    buckets = relative_position_buckets(1000, num_buckets=320, max_distance=800)
    rel = np.arange(1000)[None, :] - np.arange(1000)[:, None]
    assert buckets.shape == (1000, 1000) and buckets.dtype == np.int32
    # small offsets are exact; keys to the right use the upper half of the buckets
    assert buckets[0, 0] == 0 and buckets[5, 3] == 2 and buckets[3, 5] == 162
    assert buckets[rel == 79].max() == 160 + 79 and buckets[rel == -79].max() == 79
    # far offsets share log-spaced buckets, clipped to the last bucket of each half
    assert buckets[rel == 999].max() == 319 and buckets[rel == -999].max() == 159
    assert np.all(np.diff(buckets[0]) >= 0)  # monotone in the offset
    assert len(np.unique(buckets)) <= 320


def test_params_have_logical_axes_and_base_size_matches_beats():
    model = _model()
    names = nnx.to_pure_dict(layers.logical_axes_tree(nnx.state(model, nnx.Param)))
    assert names["layers"]["self_attn"]["query"]["kernel"] == ("layers", "embed", "heads", "kv")
    assert names["pos_conv"]["weight_v"] == ("conv_in", "kv", "embed")
    assert names["rel_pos_bias"] == ("pos", "heads")
    base = nnx.eval_shape(lambda: AudioTransformer(audio_config("base"), rngs=nnx.Rngs(0)))
    count = sum(v.size for v in jax.tree.leaves(nnx.state(base, nnx.Param)))
    # BEATs_iter3+ encoder: 90.0 M parameters (no predictor head)
    assert 89.5e6 < count < 90.5e6, count


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r"\[B, C, T, M\]"):
        model(jnp.zeros((2, 128, 64)))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(jnp.zeros((1, 1, 100, 64)))
    with pytest.raises(ValueError, match="unknown audio tower size"):
        audio_config("large")


def test_sharded_forward_on_eight_devices_matches_single_device():
    """Params sharded by their logical axes (fsdp x model), clips over (data, fsdp)."""
    model = _model()
    fbank = _fbank(b=4, c=1)
    expected = _run(model, fbank).tokens
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shardings = parallel.state_shardings(params, mesh)
    expected_spec = jax.sharding.PartitionSpec(None, "fsdp", "model", None)
    assert shardings["layers"]["self_attn"]["query"]["kernel"].spec == expected_spec
    nnx.replace_by_pure_dict(params, jax.device_put(nnx.to_pure_dict(params), shardings))
    fbank = jax.device_put(fbank, parallel.batch_sharding(mesh, fbank.ndim))

    @jax.jit
    def forward(p, x):
        with layers.logical_sharding(mesh, parallel.LOGICAL_AXIS_RULES):
            return nnx.merge(graphdef, p, rest, copy=True)(x).tokens

    out = forward(params, fbank)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, expected, atol=2e-5)
