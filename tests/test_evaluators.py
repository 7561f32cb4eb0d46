"""gram_jax.evaluators: hand-computed score matrices and brute-force oracles."""

import numpy as np
import pytest

from gram_jax.evaluators import (
    RetrievalEvaluator,
    ZeroShotClassifier,
    average_precision,
    classification_metrics,
    mean_average_precision,
    ranks,
    rerank_with_matching,
    retrieval_metrics,
    tuple_scores,
)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force_rank(scores, correct):
    """Sort candidates by score, incorrect first among ties; position of the first correct one."""
    out = []
    for row, ok in zip(scores, correct, strict=True):
        order = sorted(range(len(row)), key=lambda j: (-row[j], bool(ok[j])))
        out.append(next(pos for pos, j in enumerate(order) if ok[j]))
    return np.array(out)


def brute_force_metrics(rank):
    rank = np.asarray(rank)
    r = {k: 100.0 * sum(x < k for x in rank) / len(rank) for k in (1, 5, 10)}
    return {
        "R@1": r[1],
        "R@5": r[5],
        "R@10": r[10],
        "R@mean": (r[1] + r[5] + r[10]) / 3,
        "MdR": float(np.median(rank)) + 1,
        "MnR": float(np.mean(rank)) + 1,
    }


def test_retrieval_metrics_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # gt 0: nothing above -> rank 0
            [0.2, 0.8, 0.7, 0.1],  # gt 2: 0.8 above -> rank 1
            [0.3, 0.2, 0.1, 0.05],  # gt 3: three above -> rank 3
        ]
    )
    m = retrieval_metrics(scores, np.array([0, 2, 3]))
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["R@5"] == m["R@10"] == 100.0
    assert m["MdR"] == 2.0
    assert m["MnR"] == pytest.approx((0 + 1 + 3) / 3 + 1)
    assert m["R@mean"] == pytest.approx((100 / 3 + 200) / 3)


def test_ties_count_against_the_query_and_best_caption_counts():
    assert list(ranks(np.zeros((2, 5)), np.array([0, 4]))) == [4, 4]
    # Video 0 has captions 0 and 2; caption 2 ranks first, so the video's rank is 0.
    scores = np.array([[0.1, 0.5, 0.9], [0.3, 0.2, 0.1]])
    assert list(ranks(scores, [{0, 2}, {1}])) == [0, 1]


def test_ground_truth_forms_agree():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 9))
    mask = rng.random((6, 9)) < 0.25
    mask[np.arange(6), rng.integers(0, 9, 6)] = True
    as_sets = [set(np.flatnonzero(row)) for row in mask]
    as_pairs = tuple(np.nonzero(mask))
    want = ranks(scores, mask)
    np.testing.assert_array_equal(ranks(scores, as_sets), want)
    np.testing.assert_array_equal(ranks(scores, as_pairs), want)
    single = rng.integers(0, 9, 6)
    one_hot = np.zeros((6, 9), bool)
    one_hot[np.arange(6), single] = True
    np.testing.assert_array_equal(ranks(scores, single), ranks(scores, one_hot))


def test_ranks_match_brute_force_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal((40, 30)), 1)  # rounding makes many ties
    correct = rng.random((40, 30)) < 0.1
    correct[np.arange(40), rng.integers(0, 30, 40)] = True
    want = brute_force_rank(scores, correct)
    np.testing.assert_array_equal(ranks(scores, correct), want)
    got = retrieval_metrics(scores, correct)
    for key, value in brute_force_metrics(want).items():
        assert got[key] == pytest.approx(value)


def test_bad_ground_truth_and_scores_raise_clear_errors():
    with pytest.raises(ValueError, match="no correct candidate"):
        ranks(np.zeros((2, 3)), [{0}, set()])
    with pytest.raises(ValueError, match="non-finite"):
        ranks(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match=r"candidate indices must lie in \[0, 3\)"):
        ranks(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match="scores"):
        ranks(np.zeros(3), np.array([0]))


def test_rerank_with_matching_orders_candidates_by_match_score():
    base = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    calls = []

    def match_fn(q, c):
        calls.append((q.copy(), c.copy()))
        return np.where(c == 2, 0.99, 0.1 * c)  # candidate 2 is the best match everywhere

    out = rerank_with_matching(base, match_fn, top_k=3, batch_size=4)
    seen = sorted(
        zip(
            np.concatenate([q for q, _ in calls]),
            np.concatenate([c for _, c in calls]),
            strict=True,
        )
    )
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3), (1, 4)]  # top-3 of each row
    assert all(len(q) <= 4 for q, _ in calls)
    # Row 0: candidates {0, 1, 2} by match score 2 > 1 > 0, then 3 > 4 in base order.
    np.testing.assert_array_equal(np.argsort(-out[0], kind="stable"), [2, 1, 0, 3, 4])
    np.testing.assert_array_equal(np.argsort(-out[1], kind="stable"), [2, 4, 3, 1, 0])
    assert list(ranks(out, np.array([3, 0]))) == [3, 4]


def test_average_precision_hand_computed_and_against_sklearn():
    # Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    # A tie between a positive and a negative at the top: precision 1/2 for that group.
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal((50, 6)), 1)
    labels = rng.random((50, 6)) < 0.3
    for c in range(6):
        want = sklearn_metrics.average_precision_score(labels[:, c], scores[:, c])
        assert average_precision(scores[:, c], labels[:, c]) == pytest.approx(want)
    want_map = np.mean(
        [sklearn_metrics.average_precision_score(labels[:, c], scores[:, c]) for c in range(6)]
    )
    assert mean_average_precision(scores, labels) == pytest.approx(want_map)


def test_classification_metrics_hand_computed():
    scores = np.array([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    m = classification_metrics(scores, np.array([0, 0, 5]))
    # Item 0: rank 0. Item 1: class 0 is last (rank 5). Item 2: class 5 is last (rank 5).
    assert m["top1"] == pytest.approx(100 / 3)
    assert m["top5"] == pytest.approx(100 / 3)
    multi = classification_metrics(
        scores, np.eye(6, dtype=bool)[[0, 5, 2]] | np.eye(6, dtype=bool)[[1, 4, 3]]
    )
    assert multi["top1"] == pytest.approx(200 / 3)  # item 2's best class (0) is not a label
    with pytest.raises(ValueError, match="class ids"):
        classification_metrics(scores, np.array([0, 6, 1]))


class TableEncoder:
    """encode_fn over a fixed table: media by record `index`, text by (index, caption_index)."""

    def __init__(self, media, captions, prompts=None):
        self.media, self.captions, self.prompts = media, captions, prompts

    def __call__(self, batch):
        if "text_ids" in batch and "index" not in batch:  # class prompts: text_ids[:, 0] = class
            return {"text": self.prompts[batch["text_ids"][:, 0]]}
        idx, cap = batch["index"], batch["caption_index"]
        out = {m: table[idx] for m, table in self.media.items()}
        out["text"] = np.stack(
            [self.captions[(int(i), int(c))] for i, c in zip(idx, cap, strict=True)]
        )
        return out


def oracle_volume_matrix(text, data, present):
    """float64 volumes [Nt, Nd] with absent modalities dropped."""
    out = np.zeros((text.shape[0], data.shape[1]))
    for i in range(text.shape[0]):
        for j in range(data.shape[1]):
            rows = [text[i]] + [data[m, j] for m in range(data.shape[0]) if present[m, j]]
            a = np.stack(rows)
            out[i, j] = np.sqrt(max(np.linalg.det(a @ a.T), 0.0))
    return out


def make_retrieval_set(rng, n_videos=12, dim=32):
    """Records with 1-3 captions each, audio missing for some, batched with padding."""
    topic = unit(rng.standard_normal((n_videos, dim)))
    video = unit(topic + 0.6 * rng.standard_normal((n_videos, dim)))
    audio = unit(topic + 0.6 * rng.standard_normal((n_videos, dim)))
    has_audio = rng.random(n_videos) > 0.25
    audio[~has_audio] = 0.0  # the batch contract: a missing modality holds zeros
    captions, rows = {}, []
    for i in range(n_videos):
        for c in range(int(rng.integers(1, 4))):
            captions[(i, c)] = unit(topic[i] + 0.6 * rng.standard_normal(dim))
            rows.append((i, c))
    order = rng.permutation(len(rows))
    rows = [rows[r] for r in order]
    batches = []
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        pad = 8 - len(chunk)
        idx = np.array([r[0] for r in chunk] + [0] * pad, np.int32)
        cap = np.array([r[1] for r in chunk] + [0] * pad, np.int32)
        batches.append(
            {
                "index": idx,
                "caption_index": cap,
                "valid": np.array([True] * len(chunk) + [False] * pad),
                "present_audio": has_audio[idx],
                "present_video": np.ones(8, bool),
            }
        )
    encoder = TableEncoder({"video": video, "audio": audio}, captions)
    return encoder, batches, rows, video, audio, has_audio


def test_retrieval_evaluator_matches_brute_force():
    rng = np.random.default_rng(3)
    encoder, batches, rows, video, audio, has_audio = make_retrieval_set(rng)
    # Brute force: texts in row order, videos in order of first appearance.
    first_seen = list(dict.fromkeys(r[0] for r in rows))
    text = np.stack([encoder.captions[r] for r in rows])
    data = np.stack([video[first_seen], audio[first_seen]])
    present = np.stack([np.ones(len(first_seen), bool), has_audio[first_seen]])
    vol = oracle_volume_matrix(text, data, present)
    correct = np.array([[r[0] == v for v in first_seen] for r in rows])
    want_t2d = brute_force_metrics(brute_force_rank(-vol, correct))
    want_d2t = brute_force_metrics(brute_force_rank(-vol.T, correct.T))

    def match_fn(text_pos, data_pos):  # an oracle matcher in valid-row positions
        return np.array(
            [float(rows[t][0] == rows[d][0]) for t, d in zip(text_pos, data_pos, strict=True)]
        )

    evaluator = RetrievalEvaluator(scorings=("volume", "cosine", "matching"), top_k=3, chunk_size=5)
    got = evaluator.run(encoder, batches, match_fn)
    for key in want_t2d:
        assert got[f"t2d/{key}"] == pytest.approx(want_t2d[key], abs=1e-9), key
        assert got[f"d2t/{key}"] == pytest.approx(want_d2t[key], abs=1e-9), key
    pos_vol = vol[correct].mean()
    assert got["positive_volume"] == pytest.approx(pos_vol, abs=1e-5)
    assert got["one_minus_gram"] == pytest.approx(1 - pos_vol, abs=1e-5)
    assert got["min_volume"] == pytest.approx(vol.min(axis=1).mean(), abs=1e-5)
    # Matching with a perfect matcher: R@1 is 100 exactly where the gt was in the volume top 3.
    in_top3 = brute_force_rank(-vol, correct) < 3
    assert got["matching/t2d/R@1"] == pytest.approx(100 * in_top3.mean())
    # Cosine: mean of text-video and text-audio cosines over the present modalities.
    cos = (text @ data[0].T + (text @ data[1].T) * present[1]) / (1 + present[1])
    want_cos = brute_force_metrics(brute_force_rank(cos, correct))
    assert got["cosine/t2d/R@1"] == pytest.approx(want_cos["R@1"])
    assert got["cosine/t2d/MnR"] == pytest.approx(want_cos["MnR"])
    # Single-modality pairs: text-video and video-audio.
    want_t2v = brute_force_metrics(brute_force_rank(text @ data[0].T, correct))
    assert got["t2v/R@5"] == pytest.approx(want_t2v["R@5"])
    want_v2a = brute_force_metrics(
        brute_force_rank(data[0] @ data[1].T, np.eye(len(first_seen), dtype=bool))
    )
    assert got["v2a/MnR"] == pytest.approx(want_v2a["MnR"])


def test_protocol_switches_require_and_first_caption():
    rng = np.random.default_rng(7)
    encoder, batches, rows, video, audio, has_audio = make_retrieval_set(rng)
    kept = [r for r in rows if has_audio[r[0]] and r[1] == 0]
    first_seen = list(dict.fromkeys(r[0] for r in rows if has_audio[r[0]]))
    text = np.stack([encoder.captions[r] for r in kept])
    data = np.stack([video[first_seen], audio[first_seen]])
    vol = oracle_volume_matrix(text, data, np.ones(data.shape[:2], bool))
    correct = np.array([[r[0] == v for v in first_seen] for r in kept])
    want = brute_force_metrics(brute_force_rank(-vol, correct))
    want_d2t = brute_force_metrics(brute_force_rank(-vol.T, correct.T))
    got = RetrievalEvaluator(require=("audio",), captions="first", modality_pairs=False).run(
        encoder, batches
    )
    assert len(kept) < len(rows) and len(first_seen) < len(has_audio)
    for key, value in want.items():
        assert got[f"t2d/{key}"] == pytest.approx(value), key
        assert got[f"d2t/{key}"] == pytest.approx(want_d2t[key]), key
    with pytest.raises(ValueError, match="captions"):
        RetrievalEvaluator(captions="last")


def test_retrieval_evaluator_ignores_padding_content():
    rng = np.random.default_rng(4)
    encoder, batches, *_ = make_retrieval_set(rng)
    clean = RetrievalEvaluator(modality_pairs=False).run(encoder, batches)

    def noisy_encoder(batch):  # padding rows get garbage embeddings
        out = encoder(batch)
        return {m: np.where(batch["valid"][:, None], v, 7.0) for m, v in out.items()}

    assert RetrievalEvaluator(modality_pairs=False).run(noisy_encoder, batches) == clean


def test_retrieval_evaluator_errors():
    rng = np.random.default_rng(5)
    encoder, batches, *_ = make_retrieval_set(rng)
    with pytest.raises(ValueError, match="match_fn"):
        RetrievalEvaluator(scorings=("matching",)).run(encoder, batches)
    with pytest.raises(ValueError, match="scorings"):
        RetrievalEvaluator(scorings=("dot",))
    with pytest.raises(KeyError, match="missing"):
        RetrievalEvaluator(modalities=("video", "depth")).run(encoder, batches)
    no_index = {k: v for k, v in batches[0].items() if k != "index"}
    ones = {m: np.ones((8, 4)) for m in ("text", "video", "audio")}
    with pytest.raises(KeyError, match="evaluation batch 0: batch has no key 'index'"):
        RetrievalEvaluator().run(lambda batch: ones, [no_index])
    with pytest.raises(ValueError, match="yielded no batches"):
        RetrievalEvaluator().run(encoder, [])


def test_zero_shot_classifier_against_brute_force():
    rng = np.random.default_rng(6)
    n_classes, dim, n = 5, 24, 30
    prompts = unit(rng.standard_normal((n_classes, dim)))
    labels = rng.integers(0, n_classes, n)
    video = unit(prompts[labels] + 0.7 * rng.standard_normal((n, dim)))
    audio = unit(prompts[labels] + 0.7 * rng.standard_normal((n, dim)))
    encoder = TableEncoder({"video": video, "audio": audio}, captions={}, prompts=prompts)

    def encode(batch):
        if "index" not in batch:
            return encoder(batch)
        return {m: encoder.media[m][batch["index"]] for m in ("video", "audio")}

    batches = [
        {"index": np.arange(s, s + 10), "label": labels[s : s + 10].astype(np.int32)}
        for s in range(0, n, 10)
    ]
    prompt_batch = {"text_ids": np.arange(n_classes)[:, None], "text_mask": np.ones((5, 1))}
    got = ZeroShotClassifier(prompts=prompt_batch).run(encode, batches)
    vol = oracle_volume_matrix(prompts, np.stack([video, audio]), np.ones((2, n), bool)).T
    rank = brute_force_rank(-vol, np.eye(n_classes, dtype=bool)[labels])
    assert got["top1"] == pytest.approx(100 * np.mean(rank < 1))
    assert got["top5"] == pytest.approx(100 * np.mean(rank < 5))
    assert got["positive_volume"] == pytest.approx(vol[np.arange(n), labels].mean(), abs=1e-5)
    # Multi-label: the true class plus a random second one.
    multi = (
        np.eye(n_classes, dtype=bool)[labels]
        | np.eye(n_classes, dtype=bool)[rng.integers(0, n_classes, n)]
    )
    mbatches = [{"index": b["index"], "labels": multi[b["index"]]} for b in batches]
    got_m = ZeroShotClassifier(prompts=prompt_batch, label_key="labels").run(encode, mbatches)
    assert got_m["mAP"] == pytest.approx(100 * mean_average_precision(-vol, multi), abs=1e-3)


def test_retrieval_evaluator_area_and_symile_scorings():
    """Every tuple scoring of the one registry is a retrieval scoring (prefix = its name)."""
    rng = np.random.default_rng(9)
    emb = {m: unit(rng.normal(size=(12, 6))).astype(np.float32) for m in ("text", "video", "audio")}
    batch = {"index": np.arange(12)}
    out = RetrievalEvaluator(scorings=("area", "symile"), modality_pairs=False).run(
        lambda b: emb, [batch]
    )
    data = np.stack([emb["video"], emb["audio"]])
    for name in ("area", "symile"):
        scores = tuple_scores(emb["text"], data, name)
        assert out[f"{name}/t2d/R@1"] == retrieval_metrics(scores, np.arange(12))["R@1"]
        assert out[f"{name}/d2t/MnR"] == retrieval_metrics(scores.T, np.arange(12))["MnR"]
    assert "t2d/R@1" not in out  # volume was not asked for
    absent = {**batch, "present_audio": np.arange(12) != 3}
    with pytest.raises(ValueError, match="'area'.*absent"):
        RetrievalEvaluator(scorings=("area",)).run(lambda b: emb, [absent])


def test_padding_rows_at_the_end_are_not_encoded():
    """The last batch is encoded up to its last valid row, rounded up to a power of two (one more
    compiled shape at most); a full or a fully valid batch keeps every row."""
    from gram_jax.evaluators.model import trimmed_rows

    def rows(valid_rows, batch):
        return trimmed_rows(np.arange(batch) < valid_rows)

    assert [rows(n, 64) for n in (64, 40, 33, 32, 5, 4, 1)] == [64, 64, 64, 32, 8, 4, 1]
    assert rows(0, 8) == 1  # nothing valid: one row, so the output contract holds
    assert trimmed_rows(np.array([True, False, True, False])) == 4  # up to the last valid row
