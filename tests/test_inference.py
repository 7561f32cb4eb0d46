"""gram_jax.inference and gram-rank on the 4 real reference clips, with a tiny GRAM.

No released weights exist offline, so the checkpoint is a tiny model's random initialisation,
saved the two ways a user has weights: a gram-train workdir (train state + saved config) and a
converted-weights file (.msgpack, what ``config.model_init`` reads). What is checked is the path,
not retrieval quality: both loads give the same model (a workdir restores only parameters and
model state, a weights file must hold every parameter); texts (text tower alone) and media
embedded from files equal what the evaluation pipeline feeds the same encoder; the scores are the
registry's volume / cosine / matching re-rank of those embeddings, the re-rank recomputing the
fusion tokens of its candidates in batches.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags
from flax import serialization

from data_pipelines import pipeline, samples
from experiments import base_config
from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.evaluators.model import matched_probability
from gram_jax.inference import GramInference, abstract_variables
from gram_jax.inference.rank import folder_items, format_ranking
from gram_jax.train import checkpoint

pytestmark = pytest.mark.media

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

CAPTIONS = [
    "A dog is barking",
    "A dog is howling",
    "A red cat is meowing",
    "A black cat is meowing",
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(config, workdir, weights file) of one random-init tiny GRAM (video, audio, text)."""
    from gram_jax.train import Trainer

    config = base_config.get_config("runlocal")
    config.evals = ml_collections.ConfigDict()
    # As gram-train does: the derived keys (e.g. the fusion tokens' frame tables) are set first.
    config = prepare(config, count_data=False)
    root = tmp_path_factory.mktemp("inference")
    one_device = parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])
    state = Trainer(config, mesh=one_device).init_state()
    manager = checkpoint.make_manager(checkpoint.checkpoint_dir(root / "workdir"))
    checkpoint.save(manager, 0, state, config=config, force=True)
    manager.wait_until_finished()
    manager.close()
    weights = root / "converted.msgpack"
    params = jax.tree.map(np.asarray, state["params"])
    weights.write_bytes(serialization.msgpack_serialize(params))
    return config, root / "workdir", weights


@pytest.fixture(scope="module")
def gram(saved):
    _, workdir, _ = saved
    return GramInference.load(workdir)  # the config saved with the checkpoint


@pytest.fixture(scope="module")
def clips(saved):
    """(video paths, audio paths) of the 4 clips as the evaluation pipeline resolves them."""
    config, _, _ = saved
    split = samples.load_split(config.data, "test")
    return split.media_paths["video"], split.media_paths["audio"]


def test_media_embeddings_equal_the_evaluation_pipeline(gram, saved, clips):
    config, _, _ = saved
    videos, audios = clips
    media = gram.embed_media(videos=videos, audios=audios)
    assert media.modalities == gram.data_modalities == ("video", "audio")
    (batch,) = list(
        pipeline.make_eval_iterator(config.data, "test", process_index=0, process_count=1)
    )
    expected, condition, condition_mask = gram.encode_batch(batch)
    for m in media.modalities:
        assert media.embeddings[m].shape == (4, config.model.embed_dim)
        np.testing.assert_allclose(media.embeddings[m], expected[m], rtol=0, atol=1e-5)
        assert media.present[m].all()
    tokens, tokens_mask = gram.condition_tokens(media, range(4))
    np.testing.assert_allclose(tokens, condition, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(tokens_mask, condition_mask)
    # Texts alone run the text tower alone, and give the full batch's text embeddings.
    texts = gram.embed_texts(CAPTIONS)
    only_text = gram.encode_batch({"text_ids": texts.ids, "text_mask": texts.mask})
    assert set(only_text[0]) == {"text"} and only_text[1] is None
    with pytest.raises(ValueError, match="holds no input of the model's modalities"):
        gram.encode_batch({"index": np.zeros(2, np.int32)})
    np.testing.assert_allclose(texts.embeddings, expected["text"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts.embeddings, axis=1), 1.0, atol=1e-5)


def test_scores_volume_cosine_and_matching(gram, clips):
    videos, audios = clips
    texts = gram.embed_texts(CAPTIONS)
    media = gram.embed_media(videos=videos, audios=audios)
    t, v, a = texts.embeddings, media.embeddings["video"], media.embeddings["audio"]
    # Volume: sqrt(det G) of (t_i, v_j, a_j), computed here directly in float64.
    gram_det = np.empty((4, 4))
    for i in range(4):
        for j in range(4):
            rows = np.stack([t[i], v[j], a[j]]).astype(np.float64)
            gram_det[i, j] = np.linalg.det(rows @ rows.T)
    volume = gram.score(texts, media, "volume")
    np.testing.assert_allclose(-volume, np.sqrt(np.clip(gram_det, 0, None)), atol=2e-5)
    cosine = gram.score(texts, media, "cosine")
    np.testing.assert_allclose(cosine, (t @ v.T + t @ a.T) / 2, atol=1e-5)
    matching = gram.score(texts, media, "matching", top_k=2)
    # The matching head on the fusion tokens of the whole batch at once (the evaluators' way).
    condition, condition_mask = gram.condition_tokens(media, range(4))
    model = gram.eval_model
    for i in range(4):
        top = np.argsort(-volume[i], kind="stable")[:2]
        probs = gram.match_probabilities(texts, media, [i, i], top)
        np.testing.assert_allclose(matching[i, top], probs, atol=1e-6)
        logits = model.match(
            gram._params,
            gram._model_state,
            texts.ids[[i, i]],
            texts.mask[[i, i]],
            condition[top],
            condition_mask[top],
        )
        np.testing.assert_allclose(probs, matched_probability(logits), atol=1e-5)
        others = np.setdiff1d(np.arange(4), top)
        assert matching[i, others].max() < matching[i, top].min()
        assert np.all((probs >= 0) & (probs <= 1))
    # An item without audio: audio leaves the Gram matrix, which is then (t, v) only.
    partial = gram.embed_media(videos=videos[:2], audios=[audios[0], None])
    assert partial.present["audio"].tolist() == [True, False]
    two = gram.score(texts, partial, "volume")[:, 1]
    cos = t @ partial.embeddings["video"][1]
    np.testing.assert_allclose(-two, np.sqrt(np.clip(1 - cos**2, 0, None)), atol=2e-5)
    with pytest.raises(ValueError, match="scoring"):
        gram.score(texts, media, "dot")
    with pytest.raises(ValueError, match="empty"):
        gram.embed_texts(["a dog", " "])
    with pytest.raises(ValueError, match="no \\['subtitle'\\] modality"):
        gram.embed_media(subtitles=["hello"])


def test_converted_weights_load_like_the_workdir(gram, saved, clips):
    config, _, weights = saved
    converted = GramInference.load(weights, config=config)
    assert converted.source == str(weights)
    videos, audios = clips
    a = gram.embed_media(videos=videos[:1], audios=audios[:1]).embeddings
    b = converted.embed_media(videos=videos[:1], audios=audios[:1]).embeddings
    for m in a:
        np.testing.assert_allclose(a[m], b[m], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pass the experiment config"):
        GramInference.load(weights)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GramInference.load(weights.with_name("absent"))
    # Every parameter must be in the file: one left out is named.
    params = serialization.msgpack_restore(weights.read_bytes())
    del params["heads"]["audio"]
    partial = weights.with_name("partial.msgpack")
    partial.write_bytes(serialization.msgpack_serialize(params))
    with pytest.raises(ValueError, match="not in the file .*heads/audio/"):
        GramInference.load(partial, config=config)


def test_a_workdir_restores_parameters_and_model_state_only(gram, saved):
    _, workdir, _ = saved
    abstract = abstract_variables(gram.eval_model)
    restored = checkpoint.restore_subtree(checkpoint.checkpoint_dir(workdir), 0, abstract)
    assert set(restored) == {"params", "model_state"}  # the optimizer moments are not read
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)


def test_matching_rerank_streams_candidates_in_small_batches(gram, saved, clips):
    """batch_size 3 < 4 items: the candidates' fusion tokens come in two chunks, same scores."""
    _, workdir, _ = saved
    videos, audios = clips
    small = GramInference.load(workdir, batch_size=3)
    texts = gram.embed_texts(CAPTIONS)
    media = gram.embed_media(videos=videos, audios=audios)
    np.testing.assert_allclose(
        small.score(texts, media, "matching", top_k=4),
        gram.score(texts, media, "matching", top_k=4),
        atol=1e-5,
    )


def test_gram_rank_command_line(saved, clips, tmp_path):
    _, workdir, weights = saved
    videos, audios = clips
    out = tmp_path / "embeddings.npz"
    command = [sys.executable, "-m", "gram_jax.cli.rank", f"--checkpoint={workdir}"]
    command += [f"--videos={','.join(videos)}", f"--audios={','.join(audios)}"]
    command += [f"--queries={CAPTIONS[0]}", f"--queries={CAPTIONS[1]}", "--top=3"]
    command += [f"--save_embeddings={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("checkpoint ") and "scoring volume; 4 items" in lines[0]
    assert lines[1] == f"embeddings: {out}"
    assert lines[2] == f"query: {CAPTIONS[0]}" and lines[6] == f"query: {CAPTIONS[1]}"
    ranked = [line.split() for line in lines[3:6]]  # --top=3 of the 4 items
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    assert {r[1] for r in ranked} <= {pathlib.Path(v).stem for v in videos}
    scores = [float(r[2]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    with np.load(out) as saved_file:
        assert saved_file["queries"].tolist() == CAPTIONS[:2]
        assert saved_file["item_names"].tolist() == [pathlib.Path(v).stem for v in videos]
        assert saved_file["modalities"].tolist() == ["video", "audio"]
        dim = saved_file["item_embeddings_video"].shape[1]
        assert saved_file["query_embeddings"].shape == (2, dim)
        assert saved_file["item_present_audio"].all() and saved_file["scores"].shape == (2, 4)
        top = np.sort(saved_file["scores"][0])[::-1][:3]
        np.testing.assert_allclose(top, scores, atol=1e-4)
    # Weights without --config: refused in one line, exit code 2.
    refused = [sys.executable, "-m", "gram_jax.cli.rank", f"--checkpoint={weights}"]
    refused += [f"--videos={videos[0]}", "--queries=a dog"]
    done = subprocess.run(refused, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "pass the experiment config" in done.stderr and "Traceback" not in done.stderr


def test_folder_items_pair_audio_by_stem(tmp_path, clips):
    videos, audios = clips
    (tmp_path / "dog.mp4").symlink_to(videos[0])
    (tmp_path / "dog.mp3").symlink_to(audios[0])
    (tmp_path / "cat.mp4").symlink_to(videos[2])  # no audio file: its own audio track
    (tmp_path / "notes.txt").write_text("not media")
    found = folder_items(tmp_path)
    assert found == (
        [str(tmp_path / "cat.mp4"), str(tmp_path / "dog.mp4")],
        [str(tmp_path / "cat.mp4"), str(tmp_path / "dog.mp3")],
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no video file"):
        folder_items(tmp_path / "empty")
    table = format_ranking(["q"], ["a", "bb"], np.array([[-0.5, -0.25]]))
    assert table.splitlines() == ["query: q", "    1  bb  -0.2500", "    2  a   -0.5000"]
