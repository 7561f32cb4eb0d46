"""gram_jax in released fidelity against the golden outputs of the released GRAM code.

tests/golden/make_released_golden.py ran the released code (ispamm/GRAM, commit in
released_meta.json) at a reduced size on the four reference clips; these tests convert its state
dict with gram_jax's converter and compare embeddings, the volume matrix, the matching re-rank,
the retrieval metrics, the training loss and gradients, and the preprocessing from raw media.
They read only the committed files (tests/golden/README.md).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from released_golden import (
    GOLDEN,
    arrays,
    batch,
    jit_encode,
    meta,
    model_overrides,
    state_dict,
    zeros_model,
)

from data_pipelines.media import audio, video
from gram_jax.cli.convert import run as convert_cli
from gram_jax.convert.gram_release import convert_gram_release
from gram_jax.convert.params_file import load_params
from gram_jax.evaluators.ranking import retrieval_metrics
from gram_jax.evaluators.scoring import rerank_with_matching, volume_scores
from gram_jax.losses import volume_contrastive_loss
from gram_jax.losses.matching import build_matching_batch, matching_loss
from gram_jax.models.gram import model_config

TOL = 1e-4  # embeddings, volumes, scores, loss (issue 11)
GRAM_ORDER = ("video", "audio", "subtitle")


def _config():
    return model_config("tiny", **model_overrides())


@pytest.fixture(scope="module")
def converted():
    return convert_gram_release(state_dict(), _config())


@pytest.fixture(scope="module")
def model(converted):
    return zeros_model(_config(), converted[0])


@pytest.fixture(scope="module")
def encoded(model):
    return jit_encode(model, jax.tree.map(jnp.asarray, batch("frames_eval")), train=False)


def test_converter_reads_every_used_key(converted):
    _, report = converted
    # Unused: EVA's CLIP projection (GRAM pools the tokens itself), the depth head (no depth),
    # and BERT's position_ids buffer. Everything else of the state dict is read.
    assert sorted(report.unused) == sorted(
        [
            "multimodal_encoder.bert.embeddings.position_ids",
            "vision_encoder.visual.head.weight",
            "vision_encoder.visual.head.bias",
            "contra_head_d.linear.weight",
        ]
    )
    assert not report.missing


@pytest.mark.parametrize(
    "modality,key", [("text", "t"), ("video", "v"), ("audio", "a"), ("subtitle", "s")]
)
def test_embeddings(encoded, modality, key):
    ours = encoded[0][modality]
    np.testing.assert_allclose(ours, arrays("outputs")[f"feat_{key}"], atol=TOL, rtol=0)


def test_volume_matrix(encoded):
    """The 4-modality (t, v, a, s) volume the released evaluation scores MSR-VTT with."""
    e = encoded[0]
    others = np.stack([e[m] for m in GRAM_ORDER])
    np.testing.assert_allclose(
        -volume_scores(e["text"], others), arrays("outputs")["volume"], atol=TOL, rtol=0
    )


def _rerank(model, encoded, direction, golden=GOLDEN):
    """Matching re-rank of the volume candidates of ``golden``'s inputs (its re-rank depth);
    released order (text, data) in both directions."""
    e, cond, cond_mask = encoded
    base = volume_scores(e["text"], np.stack([e[m] for m in GRAM_ORDER]))
    x = batch("frames_eval", golden)
    graphdef, state = nnx.split(model)

    @jax.jit
    def probs(state, ids, mask, c, c_mask):
        logits = nnx.merge(graphdef, state).match_logits(ids, mask, c, c_mask, train=False)
        return jax.nn.softmax(logits, axis=-1)[:, 1]

    def match_fn(text_idx, data_idx):
        return np.asarray(
            probs(
                state,
                x["text_ids"][text_idx],
                x["text_mask"][text_idx],
                cond[data_idx],
                cond_mask[data_idx],
            )
        )

    k = meta(golden)["itm_rerank_num"]
    if direction == "t2d":
        return rerank_with_matching(base, match_fn, top_k=k)
    return rerank_with_matching(base.T, lambda d, t: match_fn(t, d), top_k=k).T


@pytest.fixture(scope="module")
def reranked(model, encoded):
    return {d: _rerank(model, encoded, d) for d in ("t2d", "d2t")}


@pytest.mark.parametrize("direction", ["t2d", "d2t"])
def test_matching_rerank_scores(reranked, direction):
    """The subtitle tokens join the condition (ret%tvas) and their padding is attended to."""
    golden = arrays("outputs")[f"itm_{direction}"]
    candidates = golden > 0  # the released matrix is 0 outside the top-k
    k = meta()["itm_rerank_num"]
    assert candidates.sum() == 4 * k
    ours = reranked[direction]
    axis = 1 if direction == "t2d" else 0
    kth = np.take(np.sort(ours, axis=axis), [-k], axis=axis)
    np.testing.assert_array_equal(ours >= kth, candidates)
    np.testing.assert_allclose(ours[candidates], golden[candidates], atol=TOL, rtol=0)


def test_retrieval_metrics(encoded, reranked):
    """R@1 of volume and re-rank, both directions, as the released evaluation logged them."""
    released = meta()["metrics"]
    e = encoded[0]
    vol = volume_scores(e["text"], np.stack([e[m] for m in GRAM_ORDER]))
    gt = np.arange(4)
    ours = {
        "volume_T2D": retrieval_metrics(vol, gt),
        "volume_D2T": retrieval_metrics(vol.T, gt),
        "volume_ITM_T2D": retrieval_metrics(reranked["t2d"], gt),
        "volume_ITM_D2T": retrieval_metrics(reranked["d2t"].T, gt),
    }
    # The released evaluation logs the volume D2T result under 'forward_*' (a no-op rename).
    expected = {
        "volume_T2D": released["ret_area_forward"]["volume_T2D_r1"],
        "volume_D2T": released["ret_area_backard"]["forward_r1"],
        "volume_ITM_T2D": released["ret_itm_area"]["volume_ITM_T2D_r1"],
        "volume_ITM_D2T": released["ret_itm_area"]["volume_ITM_D2T_r1"],
    }
    assert {k: round(v["R@1"], 1) for k, v in ours.items()} == expected
    # gramian_value: mean over texts of the smallest volume.
    np.testing.assert_allclose(
        np.mean(np.min(-vol, axis=1)), released["gramian_value"]["value"], atol=TOL
    )


def _grad_layout(config, keys):
    """Which converted parameter entries each golden gradient key fills (a converted 0/1 mask)."""
    indicator = {k: np.zeros_like(v) for k, v in state_dict().items()}
    for k in keys:
        indicator[k] = np.ones_like(indicator[k])
    mask, _ = convert_gram_release(indicator, config)
    golden = dict(indicator)
    for k in keys:
        golden[k] = arrays("outputs")[f"grad/{k}"]
    values, _ = convert_gram_release(golden, config)
    return mask, values


def test_training_loss_and_gradients(model):
    """One released training step: volume loss (detached gathers, raw tau) + 0.1 x DAM loss.

    The hard negatives are the ones the released ``torch.multinomial`` loop drew; the DAM
    condition is video + audio (training), whatever the evaluation condition.
    """
    m = meta()
    x = jax.tree.map(jnp.asarray, batch("frames_train"))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    neg_data = jnp.asarray(m["negative_data_index"], jnp.int32)
    neg_text = jnp.asarray(m["negative_text_index"], jnp.int32)

    def loss_fn(p):
        net = nnx.merge(graphdef, p, rest, copy=True)
        enc = net.encode(x, train=True)
        e = enc.embeddings
        vol, _ = volume_contrastive_loss(
            e["text"],
            [e[k] for k in GRAM_ORDER],
            temperature=net.temperature(),
            gather_mode="reference",
        )
        index = build_matching_batch(neg_data, neg_text)
        logits = net.match_logits(
            x["text_ids"][index["text_index"]],
            x["text_mask"][index["text_index"]],
            enc.condition[index["data_index"]],
            enc.condition_mask[index["data_index"]],
            train=True,
        )
        dam = 0.1 * matching_loss(logits, index["labels"])
        return vol + dam, (vol, dam)

    (total, (vol, dam)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    assert float(vol) == pytest.approx(m["loss"]["loss_area"], abs=TOL)
    assert float(dam) == pytest.approx(m["loss"]["loss_itm"], abs=TOL)
    assert float(total) == pytest.approx(m["loss_total"], abs=TOL)

    keys = [k[len("grad/") :] for k in arrays("outputs") if k.startswith("grad/")]
    mask, golden = _grad_layout(_config(), keys)
    ours = nnx.to_pure_dict(grads)
    checked = 0
    for path, sel in jax.tree_util.tree_flatten_with_path(mask)[0]:
        sel = np.asarray(sel) > 0
        if not sel.any():
            continue
        want = _get(golden, path)[sel]
        got = np.asarray(_get(ours, path))[sel]
        scale = max(float(np.abs(want).max()), 1e-8)
        np.testing.assert_allclose(got, want, atol=1e-3 * scale, rtol=0, err_msg=str(path))
        checked += 1
    assert checked == len(keys)


def _get(tree, path):
    for p in path:
        tree = tree[p.key]
    return tree


def test_golden_files_are_small_and_documented():
    total = sum(f.stat().st_size for f in GOLDEN.glob("released_*"))
    assert total < 5.5e6
    readme = (GOLDEN / "README.md").read_text()
    for f in GOLDEN.glob("released_*"):
        assert f.name in readme
    assert json.loads((GOLDEN / "released_meta.json").read_text())["released_commit"]


# --- preprocessing from raw media -------------------------------------------------------------

MEDIA = GOLDEN.parents[1] / "data_pipelines" / "reference_data" / "media"


@pytest.mark.media
def test_frame_indices_from_raw_media():
    """The released sampler's frames (middle of each segment), for 8 and 4 frames."""
    p = arrays("preprocessing")
    for i, clip in enumerate(meta()["ids"]):
        total = video.count_frames(MEDIA / "videos" / f"{clip}.mp4")
        for n, key in ((8, "frame_indices"), (4, "train_frame_indices")):
            ours = video.sample_frame_indices(total, n, train=False, rng=None)
            np.testing.assert_array_equal(ours, p[key][i], err_msg=f"{clip}, {n} frames")


@pytest.mark.media
def test_frames_after_resize_and_crop_within_one_level():
    """Evaluation frames (short side 224, centre crop) of data.frame_transform='released' agree
    with the released VisionMapper within 1/255 per pixel (ours are rounded to uint8)."""
    p = arrays("preprocessing")
    for i, clip in enumerate(meta()["ids"]):
        frames = video.load_frames(
            MEDIA / "videos" / f"{clip}.mp4",
            num_frames=8,
            train=False,
            size=224,
            resize="crop_flip",
            transform="released",
        )
        for j, key in ((0, "pixels_first"), (4, "pixels_middle")):
            ours = frames[j].astype(np.float32) / 255.0
            golden = p[key][i].astype(np.float32).transpose(1, 2, 0)
            assert np.abs(ours - golden).max() <= 1.0 / 255.0, (clip, j)


@pytest.mark.media
@pytest.mark.parametrize("clip", [1, 2, 3, 4])
def test_fbank_from_raw_media(clip):
    """The released AudioMapper's normalised fbank slice. For real MP3 the decoders agree
    (differences are the float16 storage); the two MP4/AAC files reach librosa through
    audioread's 16-bit PCM, which moves near-silent bins (docs/reproduction.md, row 8)."""
    golden = arrays("inputs")["fbank"][clip - 1].astype(np.float32)
    ours = audio.load_fbank_slices(
        MEDIA / "audios" / f"audio{clip}.mp3", train=False, padding="reference"
    )
    assert ours.shape == golden.shape
    diff = np.abs(ours - golden)
    if clip in (2, 4):  # MP3
        assert diff.max() < 3e-3
    else:  # MP4/AAC: 16-bit PCM in the released path
        assert diff.mean() < 0.02
        assert np.mean(diff < 3e-3) > 0.9


def test_gram_convert_cli_reads_the_reduced_release(tmp_path, converted):
    """`gram-convert --format gram` with --model_overrides gives the converter's params."""
    # lazy: safetensors is in the torch extra; only this CLI round trip writes a .safetensors file
    from safetensors.numpy import save_file  # noqa: PLC0415

    weights = tmp_path / "released.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict().items()}, str(weights))
    overrides = model_overrides()
    modalities = overrides.pop("modalities")
    args = ["--format", "gram", "--input", str(weights), "--output", str(tmp_path / "out")]
    args += ["--size", "tiny", "--modalities", ",".join(modalities)]
    with pytest.raises(SystemExit) as done:
        convert_cli([*args, "--model_overrides", json.dumps(overrides)])
    assert done.value.code == 0
    loaded = load_params(tmp_path / "out")
    want = jax.tree_util.tree_flatten_with_path(converted[0])[0]
    got = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
    assert len(got) == len(want)
    for path, value in want:
        np.testing.assert_array_equal(np.asarray(got[path]), value, err_msg=str(path))
