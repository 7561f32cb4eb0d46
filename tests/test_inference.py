"""gram_jax.inference and gram-rank on the 4 real reference clips, with a tiny GRAM.

No released weights exist offline, so the checkpoint is a tiny model's random initialisation,
saved the two ways a user has weights: a gram-train workdir (train state + saved config) and a
converted-weights file (.msgpack, as gram-convert writes). What is checked is the path, not
retrieval quality: both loads give the same model; media embedded from files equal what the
evaluation pipeline feeds the same encoder; the scores are the registry's volume / cosine /
matching re-rank of those embeddings.
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
from gram_jax.cli.rank import folder_items, format_ranking
from gram_jax.inference import GramInference
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
    expected, condition, _ = gram.encode_batch(batch)
    for m in media.modalities:
        assert media.embeddings[m].shape == (4, config.model.embed_dim)
        np.testing.assert_allclose(media.embeddings[m], expected[m], rtol=0, atol=1e-5)
        assert media.present[m].all()
    np.testing.assert_allclose(media.condition, condition, rtol=0, atol=1e-4)
    texts = gram.embed_texts(CAPTIONS)
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
    for i in range(4):
        top = np.argsort(-volume[i], kind="stable")[:2]
        probs = gram.match_probabilities(texts, media, [i, i], top)
        np.testing.assert_allclose(matching[i, top], probs, atol=1e-6)
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


def test_gram_rank_command_line(saved, clips, tmp_path):
    _, workdir, _ = saved
    videos, audios = clips
    command = [sys.executable, "-m", "gram_jax.cli.rank", "--checkpoint", str(workdir)]
    command += ["--videos", *videos, "--audios", *audios, "--queries", *CAPTIONS[:2]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("checkpoint ") and "scoring volume; 4 items" in lines[0]
    assert lines[1] == f"query: {CAPTIONS[0]}" and lines[6] == f"query: {CAPTIONS[1]}"
    ranked = [line.split() for line in lines[2:6]]
    assert [r[0] for r in ranked] == ["1", "2", "3", "4"]
    assert sorted(r[1] for r in ranked) == sorted(pathlib.Path(v).stem for v in videos)
    scores = [float(r[2]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)


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
