"""TriDigits builder on a small subset of the real Debian packages.

The packages are fetched with ``apt-get download`` (a package registry) into the TriDigits cache
(``$GRAM_JAX_TRIDIGITS_DIR`` or ~/.cache/gram_jax/tridigits) once, then reused.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import shutil

import av
import numpy as np
import pytest

from data_pipelines import cli
from data_pipelines.config import data_config
from data_pipelines.datasets import get_layout
from data_pipelines.datasets import tridigits as td
from data_pipelines.datasets.tridigits import captions, media, sources, splits
from data_pipelines.datasets.tridigits import vocab as td_vocab
from data_pipelines.media import text as text_media
from data_pipelines.pipeline import make_eval_iterator
from experiments.tridigits import tridigits_common

pytestmark = pytest.mark.media

SMALL = td.BuildOptions(seed=3, folds=3, images_per_class=6, test_images_per_class=2, frames=4)


@pytest.fixture(scope="session")
def source_dir():
    cached = td.default_cache_dir() / "sources" / ".unpacked"
    if not cached.exists() and not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")
    return sources.fetch_sources(td.default_cache_dir())


@pytest.fixture(scope="session")
def small_build(source_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tridigits") / "small"
    manifest = td.build(out, SMALL, source_dir=source_dir, log=lambda *_: None)
    return out, manifest


def _records(out, fold, split):
    return json.loads(td.annotation_path(out, fold, split).read_text(encoding="utf-8"))


def test_sources_match_committed_manifest(source_dir):
    clips = sources.find_speech_clips(source_dir)
    assert len(clips) == 320
    assert len({c.voice for c in clips}) == 33
    assert len({c.language for c in clips}) == 22  # en and en_GB counted apart
    assert len({splits.base_language(c.language) for c in clips}) == 21
    images, labels = sources.load_digit_images(source_dir)
    words = sources.load_number_words(source_dir)
    # Raises on any differing image cell or clip; the words of this release are the committed ones.
    assert td.verify_content(td.source_content(images, words, clips, source_dir)) == []
    assert images.shape == (5000, 20, 20) and images.dtype == np.uint8
    reference = json.loads(td.REFERENCE_MANIFEST.read_text())
    cells = [hashlib.sha256(c.tobytes()).hexdigest() for c in images]
    assert cells == reference["image_sha256"]
    np.testing.assert_array_equal(labels, reference["image_labels"])


def test_default_splits_match_committed_manifest(source_dir):
    """The committed splits are what the default seed yields (determinism across machines)."""
    reference = json.loads(td.REFERENCE_MANIFEST.read_text())
    options = td.BuildOptions()
    assert reference["options"] == dataclasses.asdict(options)
    _, labels = sources.load_digit_images(source_dir)
    clips = sources.find_speech_clips(source_dir)
    image_split = splits.split_images(
        labels, options.images_per_class, options.test_images_per_class, options.seed
    )
    assert {k: v.tolist() for k, v in image_split.items()} == reference["image_split"]
    assert splits.assign_voice_folds(clips, options.folds, options.seed) == reference["voice_fold"]


def test_layout_and_checksums(small_build):
    out, manifest = small_build
    for sub in ("annotations", "videos", "audios"):
        assert (out / sub).is_dir()
    for group in ("videos", "audios", "annotations"):
        assert manifest[group]
        for rel, item in manifest[group].items():
            assert sources.sha256_file(out / rel) == item["sha256"], rel
    assert sources.sha256_file(out / manifest["vocab"]["path"]) == manifest["vocab"]["sha256"]
    assert len(manifest["videos"]) == 60 and len(manifest["audios"]) == 320
    written = json.loads((out / "manifest.json").read_text())
    assert written["options"] == dataclasses.asdict(SMALL)
    assert td.is_built(out, SMALL) and not td.is_built(out, td.BuildOptions())
    for fold in range(SMALL.folds):
        for split in splits.SPLITS:
            for r in _records(out, fold, split):
                assert (out / "videos" / f"{r['id']}.mp4").is_file()
                assert (out / "audios" / f"{r['id']}.wav").is_file()
                assert r["split"] == split and r["fold"] == fold and r["motion"] == "synthetic"


def test_splits_are_disjoint_and_test_voices_unseen(small_build):
    out, manifest = small_build
    test_clips = 0
    for fold in range(SMALL.folds):
        train, test = _records(out, fold, "train"), _records(out, fold, "test")
        assert len(train) == 10 * (SMALL.images_per_class - SMALL.test_images_per_class)
        train_voices = {r["voice"] for r in train}
        test_voices = {r["voice"] for r in test}
        assert test_voices and not train_voices & test_voices
        assert not {r["image_index"] for r in train} & {r["image_index"] for r in test}
        # Every held-out voice's language keeps a voice in training (its words are seen).
        train_langs = {
            splits.base_language(c["language"])
            for c in manifest["audios"].values()
            if c["fold"] != fold
        }
        assert {splits.base_language(r["language"]) for r in test} <= train_langs
        assert sorted(r["label"] for r in test) == sorted(
            c["label"] for c in manifest["audios"].values() if c["fold"] == fold
        )
        test_clips += len({r["voice"] + str(r["label"]) for r in test})
        # v2: every held-out image is tested with unseen voices and with seen ones.
        held_out_images = sorted(int(i) for i in manifest["image_split"]["test"])
        assert sorted({r["image_index"] for r in test}) == held_out_images
        seen = _records(out, fold, "test_seen")
        assert sorted(r["image_index"] for r in seen) == held_out_images
        voice_fold = {c["voice"]: c["fold"] for c in manifest["audios"].values()}
        assert all(voice_fold[r["voice"]] != fold for r in seen)  # voices trained on
        assert len(test) == sum(
            max(SMALL.test_images_per_class, sum(r["label"] == d for r in test_voice_clips))
            for d in range(10)
            for test_voice_clips in [[c for c in manifest["audios"].values() if c["fold"] == fold]]
        )
        for r in test + seen:  # image and clip show the same digit
            assert (
                r["label"]
                == manifest["videos"][f"media/images/img{r['image_index']:04d}.mp4"]["label"]
            )
        sample = _records(out, fold, "train_sample")
        assert len(sample) == min(splits.TRAIN_SAMPLE, len(train))
        assert {r["id"] for r in sample} <= {r["id"] for r in train}
    held_out = [v for v in manifest["audios"].values() if v["fold"] != splits.ALWAYS_TRAIN]
    assert test_clips == len(held_out)  # each held-out clip is tested (at least once)


def test_records_carry_the_word_in_the_clip_language(small_build):
    out, _ = small_build
    records = [r for k in range(SMALL.folds) for r in _records(out, k, "train")]
    by_key = {(r["label"], r["voice"]): r["desc"] for r in records}
    # Spot checks against Tux Paint's word lists and the Asterisk voice naming.
    expected = {
        (3, "tuxpaint_en"): "Three",
        (3, "tuxpaint_de"): "Drei",
        (5, "tuxpaint_zh_TW"): "五",
        (7, "tuxpaint_ko"): "일곱",
    }
    for key, word in expected.items():
        assert by_key.get(key, word) == word
    languages = {r["voice"]: r["language"] for r in records}
    assert languages.get("asterisk_it_IT_m_Carlo", "it") == "it"
    for r in records:
        assert r["desc"] and r["audio_source"].startswith("usr/share/")


def test_video_is_the_animated_real_digit(small_build, source_dir):
    out, manifest = small_build
    images, labels = sources.load_digit_images(source_dir)
    rel, item = next(iter(manifest["videos"].items()))
    idx = item["image_index"]
    assert item["label"] == labels[idx]
    rng = np.random.default_rng([SMALL.seed, 4, idx])
    expected = media.animate_digit(
        images[idx], media.motion_path(rng, SMALL.frames, SMALL.size), SMALL.size
    )
    with av.open(str(out / rel)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (SMALL.frames, SMALL.size, SMALL.size, 3)
    # Lossless H.264; only the RGB -> YUV -> RGB rounding remains.
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 4
    # The motion is real motion: consecutive frames differ.
    assert np.abs(np.diff(frames.astype(int), axis=0)).max() > 50


def test_raw_gsm_voice_is_decoded(small_build):
    out, manifest = small_build
    gsm = [(rel, v) for rel, v in manifest["audios"].items() if v["source"].endswith(".gsm")]
    assert len(gsm) == 20  # es-co and fr-armelle
    rel, item = gsm[0]
    assert item["sample_rate"] == 8000 and item["channels"] == 1
    samples, rate = media.decode_clip(out / rel)
    assert rate == 8000 and 0.2 < len(samples) / rate < 2.0
    assert np.abs(samples).max() > 1000  # speech, not silence


def test_build_is_deterministic(small_build, source_dir, tmp_path):
    out, manifest = small_build
    again = td.build(tmp_path / "again", SMALL, source_dir=source_dir, log=lambda *_: None)
    for group in ("annotations", "videos", "audios"):
        assert {k: v["sha256"] for k, v in again[group].items()} == {
            k: v["sha256"] for k, v in manifest[group].items()
        }


def test_real_pipeline_reads_every_test_sample(small_build):
    out, _ = small_build
    assert get_layout("tridigits").name == "tridigits"
    config = data_config(**td.data_overrides(out, 1, SMALL), eval_batch_size=8)
    test = _records(out, 1, "test")
    seen, labels = [], []
    for batch in make_eval_iterator(config, "test", process_index=0, process_count=1):
        valid = batch["valid"]
        assert batch["video"].shape[1:] == (SMALL.frames, SMALL.size, SMALL.size, 3)
        assert batch["audio"].shape[1:] == (1, td.AUDIO_FRAMES, 64)
        assert batch["present_audio"][valid].all() and batch["present_video"][valid].all()
        assert batch["video"][valid].max() > 100  # a visible digit in every clip
        seen += batch["index"][valid].tolist()
        labels += batch["label"][valid].tolist()
    assert sorted(seen) == list(range(len(test)))
    assert labels == [test[i]["label"] for i in seen]


def test_bad_inputs_name_the_problem(source_dir, tmp_path):
    images, _ = sources.load_digit_images(source_dir)
    clips = sources.find_speech_clips(source_dir)
    content = td.source_content(images, sources.load_number_words(source_dir), clips, source_dir)
    clip = "usr/share/asterisk/sounds/fr/digits/7.gsm"
    changed = {**content, "clip_sha256": {**content["clip_sha256"], clip: "0" * 64}}
    with pytest.raises(ValueError, match="fr/digits/7.gsm: sha256 0+ != expected"):
        td.verify_content(changed)
    with pytest.raises(ValueError, match="digit image 3: pixels differ"):
        cells = content["image_sha256"]
        td.verify_content({**content, "image_sha256": [*cells[:3], "0" * 64, *cells[4:]]})
    # A release that spells a word differently (Debian 11's Tux Paint has "Een" for Dutch "one"):
    # reported, and the build writes the committed word.
    words = {**content["words"], "1/nl": "Een"}
    assert td.verify_content({**content, "words": words}) == ["1/nl: 'Een' != committed 'Eén'"]
    with pytest.raises(FileNotFoundError, match="digits.png"):
        sources.load_digit_images(tmp_path)
    with pytest.raises(ValueError, match="test_images_per_class"):
        splits.split_images(np.zeros(10, np.int32), 5, 5, 0)
    with pytest.raises(ValueError, match="fold must be in"):
        td.data_overrides(tmp_path, 7)
    with pytest.raises(ValueError, match="no audio stream|cannot open"):
        bad = tmp_path / "x.wav"
        bad.write_bytes(b"not audio at all")
        media.decode_clip(bad)


def test_two_concurrent_builders_over_a_stale_partial_build(source_dir, tmp_path):
    """The cache is shared by every process: a killed build's leftovers and a second builder at
    the same time must both end in one complete build and no stray folders."""
    tiny = td.BuildOptions(seed=1, folds=2, images_per_class=2, test_images_per_class=1, frames=2)
    out = tmp_path / "tiny"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "half_written.mp4").write_bytes(b"\0" * 100)  # no manifest: not built
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(td.ensure_built, out, tiny, source_dir=source_dir, log=lambda *_: None)
            for _ in range(2)
        ]
        assert [f.result() for f in futures] == [out, out]
    assert td.is_built(out, tiny) and not (out / "videos" / "half_written.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging or old folder left
    manifest = json.loads((out / "manifest.json").read_text())
    for group in ("annotations", "videos", "audios"):
        for rel, item in manifest[group].items():
            assert sources.sha256_file(out / rel) == item["sha256"], rel


def test_cli_dispatches_to_the_builder(source_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--source-dir", str(source_dir), "--out", str(out), "--folds", "2"]
    argv += ["--images-per-class", "3", "--test-images-per-class", "1", "--frames", "2"]
    assert td.build_main(argv) == 0
    options = td.BuildOptions(folds=2, images_per_class=3, test_images_per_class=1, frames=2)
    assert td.is_built(out, options)
    # `gram-data build tridigits` reaches the same builder, which finds the build done.
    assert cli.run(["build", "tridigits", *argv]) == 0
    assert "already built" in capsys.readouterr().out


def _assert_no_collisions(tokenizer, texts, label_of):
    """Distinct texts -> distinct id sequences (so different digits never share one)."""
    ids, mask = tokenizer.encode(texts, td.TEXT_MAX_LEN)
    assert (mask.sum(1) < td.TEXT_MAX_LEN).all()  # nothing truncated
    assert not (ids == tokenizer.unk_id).any()
    by_ids: dict[tuple, set] = {}
    for text, row in zip(texts, ids.tolist(), strict=True):
        by_ids.setdefault(tuple(row), set()).add(text)
    assert len(by_ids) == len(texts), [t for t in by_ids.values() if len(t) > 1]
    for group in by_ids.values():
        assert len({label_of[t] for t in group}) == 1
    return ids


def test_texts_tokenize_without_collisions(small_build, source_dir, tmp_path):
    """With the build's own vocabulary (what the TriDigits configs read), distinct texts get
    distinct id sequences, so texts of different digits never share one; bert-base-uncased's
    vocabulary (the MiniLM warm start) collides, which is why it is not the default."""
    out, manifest = small_build
    config = data_config(**td.data_overrides(out, 0, SMALL))
    assert config.vocab_file == str(out / "vocab.txt")
    tokenizer = text_media.from_data_config(config)
    assert (tokenizer.lowercase, tokenizer.strip_accents) == (True, False)
    assert tokenizer.pad_id == 0 and tokenizer.vocab_size == manifest["vocab"]["tokens"]
    records = [r for s in splits.SPLITS for r in _records(out, 0, s)]
    label_of = {r["desc"]: r["label"] for r in records}
    assert all(label_of[r["desc"]] == r["label"] for r in records)  # a text names one digit
    _assert_no_collisions(tokenizer, sorted(label_of), label_of)

    # Deterministic, and derived again for a build that predates the file.
    first = (out / "vocab.txt").read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "annotations").symlink_to(out / "annotations")
    assert td_vocab.write_vocab(copy).read_bytes() == first

    # Every text of the default build (each clip's word: 173 distinct), its vocabulary built the
    # same way; bert-base-uncased's maps 10 Korean/Chinese/Japanese words to [CLS] [UNK] [SEP]
    # and merges Zéro/Zero, Três/Tres: 162 sequences.
    words = sources.load_number_words(source_dir)
    label_of = {
        sources.word_for(words, c.label, c.language): c.label
        for c in sources.find_speech_clips(source_dir)
    }
    texts = sorted(label_of)
    assert len(texts) == 173
    full = tmp_path / "full"
    (full / "annotations").mkdir(parents=True)
    (full / "annotations" / "all.json").write_text(
        json.dumps([{"desc": t} for t in texts], ensure_ascii=False), encoding="utf-8"
    )
    full_tokenizer = text_media.Tokenizer(td_vocab.write_vocab(full))
    ids = _assert_no_collisions(full_tokenizer, texts, label_of)
    assert full_tokenizer.tokenize("Zéro 셋 零 きゅう") == ["zéro", "셋", "零", "きゅう"]
    # A word the texts lack, in their scripts, is spelt out rather than [UNK].
    assert full_tokenizer.tokenize("셋넷") == ["셋", "##넷"]
    bert_ids, _ = text_media.Tokenizer().encode(texts, td.TEXT_MAX_LEN)
    assert len({tuple(r) for r in bert_ids.tolist()}) == 162

    # transformers reads the same vocab.txt + tokenizer_config.json to the same ids.
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BertTokenizer.from_pretrained(str(full))
    reference = theirs(texts, padding="max_length", max_length=td.TEXT_MAX_LEN, return_tensors="np")
    np.testing.assert_array_equal(reference["input_ids"], ids)


def test_minilm_config_keeps_the_bert_vocabulary(small_build):
    """The MiniLM warm start embeds bert-base-uncased's ids: its data keeps that vocabulary
    (words of scripts it lacks become [UNK]); the from-scratch configs read the build's."""
    out, _ = small_build
    kwargs = dict(data_root=str(out), build=False, small_data=True)
    scratch = tridigits_common.tridigits_config(**kwargs)
    assert scratch.data.vocab_file == str(out / "vocab.txt")
    bert = tridigits_common.tridigits_config(text_vocab="bert", **kwargs)
    assert bert.data.vocab_file is None
    with pytest.raises(ValueError, match="text_vocab"):
        tridigits_common.tridigits_config(text_init="minilm", text_vocab="dataset", **kwargs)


def _centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(frame[..., 0] > 100)
    return np.array([xs.mean(), ys.mean()])


def test_motion_words_name_what_the_rendered_video_shows():
    """Each caption word is checked on the rendering itself: an off-centre bar drawn by
    ``animate_digit`` along a path that changes one pose component at a time."""
    cell = np.zeros((20, 20), np.uint8)
    cell[0:3, 9:11] = 255  # a bar at the top centre: rotation moves it sideways
    still = [0.0, 0.0, 0.0, 1.0]
    cases = {
        "right": [3.0, 0.0, 0.0, 1.0],
        "left": [-3.0, 0.0, 0.0, 1.0],
        "down": [0.0, 3.0, 0.0, 1.0],
        "up": [0.0, -3.0, 0.0, 1.0],
    }
    for drift, end in cases.items():
        poses = np.array([still, end], np.float32)
        first, last = (_centroid(f) for f in media.animate_digit(cell, poses, 28))
        shift = last - first  # (x, y) on screen, y downwards
        seen = {
            "right": shift[0] > 2,
            "left": shift[0] < -2,
            "down": shift[1] > 2,
            "up": shift[1] < -2,
        }
        assert seen[drift] and captions.motion_words(poses)[0] == drift
    turn = np.array([still, [0.0, 0.0, 30.0, 1.0]], np.float32)
    first, last = (_centroid(f) for f in media.animate_digit(cell, turn, 28))
    assert last[0] > first[0] + 2  # the top of the bar moved right: clockwise on screen
    assert captions.motion_words(turn)[1] == "clockwise"
    assert captions.motion_words(turn[::-1])[1] == "anticlockwise"
    grow = np.array([still, [0.0, 0.0, 0.0, 1.2]], np.float32)
    first, last = (_centroid(f) for f in media.animate_digit(cell, grow, 28))
    assert last[1] < first[1]  # the bar moved away from the centre: the digit grew
    assert captions.motion_words(grow)[2] == "growing"
    assert captions.motion_words(grow[::-1])[2] == "shrinking"
    path = np.array([still, [1.0, -0.5, -10.0, 0.9]], np.float32)
    assert captions.caption("sieben", path) == "sieben: right, anticlockwise, shrinking"
    with pytest.raises(ValueError, match=r"poses of shape \[F >= 2, 4\]"):
        captions.motion_words(np.zeros((1, 4)))


def test_caption_build_describes_each_record_s_motion(source_dir, tmp_path):
    """A caption build: every text is its record's word plus its image's motion; the word is kept
    beside it; the media are those of the word build; the pipeline reads the longer texts."""
    options = dataclasses.replace(SMALL, text="caption")
    out = tmp_path / "captions"
    manifest = td.build(out, options, source_dir=source_dir, log=lambda *_: None)
    assert manifest["options"]["text"] == "caption" and td.is_built(out, options)
    assert not td.is_built(out, SMALL)
    records = [r for s in splits.SPLITS for r in _records(out, 0, s)]
    for r in records[:50]:
        rng = np.random.default_rng([options.seed, 4, r["image_index"]])
        poses = media.motion_path(rng, options.frames, options.size)
        assert r["desc"] == captions.caption(r["word"], poses)
    assert len({r["desc"] for r in records}) > len({r["word"] for r in records})
    config = data_config(**td.data_overrides(out, 0, options))
    tokenizer = text_media.from_data_config(config)
    ids, _ = tokenizer.encode([r["desc"] for r in records], options.text_max_len)
    # No caption is cut: the last position of every row is padding or [SEP].
    assert all(row[-1] in (tokenizer.pad_id, tokenizer.sep_id) for row in ids.tolist())
    with pytest.raises(ValueError, match="BuildOptions.text='sentence'"):
        td.BuildOptions(text="sentence")
