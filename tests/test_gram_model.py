"""GramModel: config, encode (all five modalities), fusion tokens, matching logits, temperature,
functional use (split/merge under jit, eval_shape), dtypes and determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gram_jax.models.gram import Encoded, GramModel, model_config, tiny_model_config
from gram_jax.models.heads import l2_normalize, nearest_indices

B = 2
FRAMES, IMAGE = 2, 28  # tiny ViT: 2x2 patches of 14 + CLS
CLIPS, T, MELS = 1, 32, 32  # tiny audio: 2x2 patches of 16


def _batch(seed=0, modalities=("text", "video", "audio", "subtitle", "depth")):
    rng = np.random.default_rng(seed)
    batch = {}
    for m in ("text", "subtitle"):
        ids = rng.integers(1000, 3000, (B, 6)).astype(np.int32)
        ids[:, 0] = 101
        mask = np.ones((B, 6), np.int32)
        mask[1, 4:] = 0
        batch[f"{m}_ids"], batch[f"{m}_mask"] = ids, mask
    for m in ("video", "depth"):
        batch[m] = rng.integers(0, 256, (B, FRAMES, IMAGE, IMAGE, 3)).astype(np.uint8)
    batch["audio"] = rng.normal(size=(B, CLIPS, T, MELS)).astype(np.float32)
    return {k: v for k, v in batch.items() if k.split("_")[0] in modalities or k in modalities}


ALL = ("text", "video", "audio", "subtitle", "depth")


@pytest.fixture(scope="module")
def full():
    cfg = model_config(
        "tiny",
        modalities=ALL,
        matching=dict(condition_modalities=("video", "audio", "subtitle")),
        vision=dict(max_frames=4),
    )
    model = GramModel(cfg, rngs=nnx.Rngs(params=0, dropout=1))
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, batch):
        m = nnx.merge(graphdef, state)
        enc = m.encode(batch, train=False)
        logits = m.match_logits(
            batch["text_ids"], batch["text_mask"], enc.condition, enc.condition_mask, train=False
        )
        return enc, logits, m.temperature()

    return model, run, state


def test_encode_gives_unit_embeddings_fusion_tokens_and_logits(full):
    _, run, state = full
    enc, logits, tau = run(state, _batch())
    assert isinstance(enc, Encoded)
    assert sorted(enc.embeddings) == sorted(ALL)
    for name, e in enc.embeddings.items():
        assert e.shape == (B, 512) and e.dtype == jnp.float32, name
        np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-5)
    # video: 2 frames x (1 + 4) tokens; audio: 1 clip x 4 tokens; subtitle: 6 tokens
    assert enc.condition.shape == (B, 2 * 5 + 4 + 6, 64)
    assert enc.condition_mask.dtype == jnp.int32
    np.testing.assert_array_equal(enc.condition_mask[1, -6:], [1, 1, 1, 1, 0, 0])
    assert enc.condition_mask[:, :14].min() == 1
    assert logits.shape == (B, 2) and logits.dtype == jnp.float32
    np.testing.assert_allclose(tau, 0.07, rtol=1e-6)


def test_text_and_subtitle_share_bert_video_and_depth_share_the_vit(full):
    model, run, state = full
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert {"bert", "vision", "audio", "heads", "condition_tokens", "match_head"} <= set(params)
    assert sorted(params["heads"]) == sorted(ALL)
    batch = _batch()
    batch["depth"] = batch["video"]
    batch["subtitle_ids"], batch["subtitle_mask"] = batch["text_ids"], batch["text_mask"]
    enc, _, _ = run(state, batch)
    # One tower per pair: the same input gives the same pooled feature, which only the
    # modality's own head (no bias) turns into different unit vectors.
    heads = params["heads"]
    pooled_v = model.vision(model.normalize_frames(jnp.asarray(batch["video"]))).pooled
    cls_t = model.bert(jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"]))[:, 0]
    for m, feat in (("video", pooled_v), ("depth", pooled_v), ("text", cls_t), ("subtitle", cls_t)):
        proj = np.asarray(feat) @ np.asarray(heads[m]["proj"]["kernel"])
        expect = proj / np.linalg.norm(proj, axis=-1, keepdims=True)
        np.testing.assert_allclose(enc.embeddings[m], expect, atol=2e-5, err_msg=m)
    assert not np.allclose(enc.embeddings["video"], enc.embeddings["depth"])


def test_frames_are_normalised_with_clip_statistics_and_frame_embeddings_resized(full):
    model, _, _ = full
    frames = jnp.full((1, 1, 1, 1, 3), 255, jnp.uint8)
    expect = (1.0 - np.array(model.video_mean)) / np.array(model.video_std)
    np.testing.assert_allclose(model.normalize_frames(frames).reshape(3), expect, rtol=1e-6)
    # nearest resize as torch's F.interpolate(mode='nearest'): 2 trained rows over 8 frames
    np.testing.assert_array_equal(nearest_indices(8, 2), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(nearest_indices(2, 4), [0, 2])


def test_l2_normalize_matches_torch_semantics_and_is_safe_at_zero():
    x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]], rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(l2_normalize(v)))(x)
    assert np.isfinite(grad).all()


def test_determinism_eval_vs_train_and_functional_state(full):
    model, run, state = full
    batch = _batch()
    a, _, _ = run(state, batch)
    b, _, _ = run(state, batch)
    for m in ALL:
        np.testing.assert_array_equal(a.embeddings[m], b.embeddings[m])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def train_step(params, rest, batch):
        def loss(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            enc = m.encode(batch, train=True)
            total = sum(jnp.sum(e[:, 0]) for e in enc.embeddings.values())
            return total, nnx.state(m, nnx.Not(nnx.Param))

        (value, new_rest), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, grads, new_rest

    v1, grads, rest2 = train_step(params, rest, batch)
    v2, _, _ = train_step(params, rest2, batch)
    assert np.isfinite(v1) and v1 != v2  # dropout on in training, stream advanced
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    g_bert = nnx.to_pure_dict(grads)["bert"]["layers"]["attn"]["query"]["kernel"]
    assert np.abs(g_bert).max() > 0


def test_abstract_init_and_bf16_compute_with_float32_params():
    cfg = model_config("tiny", modalities=("text", "subtitle"), dtype="bfloat16")
    cfg.matching.condition_modalities = ("subtitle",)
    abstract = nnx.eval_shape(lambda: GramModel(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert all(x.dtype == jnp.float32 for x in leaves)
    model = GramModel(cfg, rngs=nnx.Rngs(0))
    enc = model.encode(_batch(modalities=("text", "subtitle")), train=False)
    assert enc.embeddings["text"].dtype == jnp.float32
    assert enc.condition.dtype == jnp.bfloat16


def test_text_mean_pooling_averages_only_real_tokens():
    """``text.pool='mean'`` embeds the projection of the masked token mean, not the CLS token."""
    cfg = model_config("tiny", modalities=("text", "video"), text=dict(pool="mean"))
    model = GramModel(cfg, rngs=nnx.Rngs(params=0, dropout=1))
    batch = _batch(modalities=("text", "video"))
    enc = model.encode(batch, train=False)
    hidden = np.asarray(model.bert(batch["text_ids"], batch["text_mask"], train=False), np.float64)
    mask = batch["text_mask"].astype(np.float64)[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    want = pooled @ np.asarray(model.heads["text"].proj.kernel[...], np.float64)
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(enc.embeddings["text"], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="text.pool must be 'cls' or 'mean'"):
        GramModel(model_config("tiny", text=dict(pool="max")), rngs=nnx.Rngs(0))


def test_config_defaults_and_clear_errors():
    cfg = model_config()
    assert cfg.size == "tiny" and cfg.embed_dim == 512
    assert tuple(cfg.modalities) == ("text", "video", "audio")
    paper = model_config("paper")
    assert (paper.text.size, paper.vision.size, paper.audio.size) == ("base", "giant", "base")
    small = tiny_model_config(paper)
    assert small.vision.size == "tiny" and small.temperature.init == 0.07
    with pytest.raises(ValueError, match="unknown key 'widht'"):
        model_config(widht=3)
    with pytest.raises(ValueError, match="model_config.text: unknown key"):
        model_config(text=dict(layers=3))
    with pytest.raises(ValueError, match="2..5 distinct"):
        GramModel(model_config(modalities=("text", "smell")), rngs=nnx.Rngs(0))
    cfg = model_config(modalities=("text", "subtitle"))
    with pytest.raises(ValueError, match="condition_modalities"):
        GramModel(cfg, rngs=nnx.Rngs(0))
    cfg.matching.enabled = False
    model = GramModel(cfg, rngs=nnx.Rngs(0))
    batch = _batch(modalities=("text", "subtitle"))
    assert model.encode(batch, train=False).condition is None
    with pytest.raises(KeyError, match="subtitle_ids"):
        model.encode({"text_ids": batch["text_ids"], "text_mask": batch["text_mask"]}, train=False)
