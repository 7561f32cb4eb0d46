"""Shared layers: attention (masks, bias, cross, dtypes), MLP, LayerNorm, dropout/drop-path,
layer stacking (scan / unrolled / remat) and logical axis names."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax import parallel
from gram_jax.models import layers


def _attention_oracle(attn: layers.Attention, x, context, mask, bias):
    """Multi-head attention written out in float64 numpy from the module's parameters."""
    params = nnx.to_pure_dict(nnx.state(attn, nnx.Param))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x, context = np.asarray(x, np.float64), np.asarray(context, np.float64)
    q = np.einsum("ble,ehd->blhd", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("ble,ehd->blhd", context, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("ble,ehd->blhd", context, p["value"]["kernel"]) + p["value"]["bias"]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if mask is not None:
        logits = np.where(np.asarray(mask, bool)[:, None, None, :], logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probs, v)
    return np.einsum("bqhd,hde->bqe", out, p["out"]["kernel"]) + p["out"]["bias"]


def test_attention_matches_a_float64_oracle_with_mask_and_bias():
    attn = layers.Attention(16, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    bias = jax.random.normal(jax.random.key(2), (1, 4, 5, 5))
    out = attn(x, mask=mask, bias=bias)
    np.testing.assert_allclose(out, _attention_oracle(attn, x, x, mask, bias), atol=1e-5)


def test_cross_attention_uses_the_context_width():
    attn = layers.Attention(16, 4, kv_dim=24, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 3, 16))
    ctx = jax.random.normal(jax.random.key(2), (2, 7, 24))
    out = attn(x, ctx)
    assert out.shape == (2, 3, 16)
    np.testing.assert_allclose(out, _attention_oracle(attn, x, ctx, None, None), atol=1e-5)


def test_padding_does_not_change_unpadded_positions():
    attn = layers.Attention(16, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 4, 16))
    garbage = 100.0 * jax.random.normal(jax.random.key(3), (1, 3, 16))
    padded = jnp.concatenate([x, garbage], axis=1)
    mask = jnp.array([[1, 1, 1, 1, 0, 0, 0]])
    np.testing.assert_allclose(attn(padded, mask=mask)[:, :4], attn(x), atol=1e-5)


def test_qkv_bias_switch_and_mask_layouts():
    attn = layers.Attention(8, 2, qkv_bias=(True, False, True), rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(attn, nnx.Param))
    assert "bias" in params["query"] and "bias" not in params["key"]
    assert "bias" in params["value"]
    x = jax.random.normal(jax.random.key(1), (2, 3, 8))
    key_mask = jnp.array([[True, True, False], [True, False, False]])
    full = jnp.broadcast_to(key_mask[:, None, :], (2, 3, 3))
    np.testing.assert_allclose(attn(x, mask=key_mask), attn(x, mask=full), atol=1e-6)
    with pytest.raises(ValueError, match="attention mask"):
        attn(x, mask=jnp.ones((2, 1, 1, 1, 3)))


def test_bf16_compute_keeps_float32_params_and_float32_softmax():
    attn = layers.Attention(16, 4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    ref = layers.Attention(16, 4, rngs=nnx.Rngs(0))
    for leaf in jax.tree.leaves(nnx.state(attn, nnx.Param)):
        assert leaf.dtype == jnp.float32
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    out = attn(x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref(x), atol=5e-2)


def test_layernorm_and_exact_gelu_mlp_against_formulas():
    ln = layers.LayerNorm(6, eps=1e-12, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32) * 5 + 2
    expect = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(ln(jnp.asarray(x)), expect, atol=1e-5)

    mlp = layers.MLP(6, 10, rngs=nnx.Rngs(0))
    p = nnx.to_pure_dict(nnx.state(mlp, nnx.Param))
    h = x @ np.asarray(p["fc1"]["kernel"]) + np.asarray(p["fc1"]["bias"])
    erf = np.vectorize(math.erf)
    h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact erf GELU, not the tanh approximation
    expect = h @ np.asarray(p["fc2"]["kernel"]) + np.asarray(p["fc2"]["bias"])
    np.testing.assert_allclose(mlp(jnp.asarray(x)), expect, atol=1e-4)
    with pytest.raises(ValueError, match="unknown activation 'swish2'"):
        layers.MLP(4, 4, activation_name="swish2", rngs=nnx.Rngs(0))


def test_dropout_and_drop_path_train_vs_eval_and_determinism():
    x = jnp.ones((64, 3, 4))
    drop = layers.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    assert jnp.array_equal(drop(x, train=False), x)
    a = drop(x, train=True)
    b = drop(x, train=True)  # the stream advances: a new mask
    assert not jnp.array_equal(a, b)
    assert set(np.unique(np.asarray(a))) <= {0.0, 2.0}
    again = layers.Dropout(0.5, rngs=nnx.Rngs(dropout=3))(x, train=True)
    assert jnp.array_equal(a, again)  # same seed -> same mask

    dp = layers.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    y = np.asarray(dp(x, train=True))
    per_sample = y.reshape(64, -1)
    # each sample is dropped or kept as a whole
    assert all(len(np.unique(row)) == 1 for row in per_sample)
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert jnp.array_equal(dp(x, train=False), x)


def _stack(scan, remat, rngs):
    class Stack(nnx.Module):
        def __init__(self):
            self.blocks = layers.stack_layers(
                lambda r: layers.PreNormBlock(16, 4, 32, drop_path_rate=0.2, rngs=r), 3, rngs
            )

        def __call__(self, x, train):
            return layers.apply_layers(
                self.blocks,
                x,
                lambda blk, h: blk(h, train=train),
                scan=scan,
                remat_policy=remat,
            )

    return Stack()


def test_scan_unrolled_and_remat_agree_in_value_and_grad():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    results = []
    for scan, remat in [(True, "none"), (False, "none"), (True, "dots")]:
        model = _stack(scan, remat, nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, rest=rest, graphdef=graphdef):
            return jnp.sum(nnx.merge(graphdef, p, rest, copy=True)(x, False) ** 2)

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        results.append((value, grads))
    for value, grads in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-5)
        for g, g0 in zip(jax.tree.leaves(grads), jax.tree.leaves(results[0][1]), strict=True):
            np.testing.assert_allclose(g, g0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="remat_policy"):
        _stack(True, "sometimes", nnx.Rngs(0))(x, False)


def test_stacked_layers_have_distinct_init_and_a_layers_axis_name():
    model = _stack(True, "none", nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    kernel = nnx.to_pure_dict(params)["blocks"]["attn"]["query"]["kernel"]
    assert kernel.shape == (3, 16, 4, 4)
    assert not np.allclose(kernel[0], kernel[1])
    names = layers.logical_axes_tree(params)
    assert names["blocks"]["attn"]["query"]["kernel"] == ("layers", "embed", "heads", "kv")
    assert names["blocks"]["mlp"]["fc1"]["kernel"] == ("layers", "embed", "mlp")


def test_constrain_shards_activations_by_logical_rules():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("mlp", "model"), ("embed", None))
    spec = parallel.logical_to_spec(("batch", "length", "mlp"), (4, 3, 16), mesh, rules)
    assert spec == jax.sharding.PartitionSpec("data", None, "model")
    mlp = layers.MLP(8, 16, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 3, 8))
    plain = mlp(x)
    with layers.logical_sharding(mesh, rules):
        sharded = jax.jit(lambda v: mlp(v))(x)
    np.testing.assert_allclose(sharded, plain, atol=1e-6)
