"""gram_jax.evaluators.report, scoring and plots on embeddings with known answers, and the
TriDigits sweep's aggregation (mean and 95 % CI)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from experiments.tridigits import aggregate, sweep
from gram_jax.evaluators import plots, report, retrieval_metrics, scoring
from gram_jax.volume import gram_volume

REPO = pathlib.Path(__file__).resolve().parents[1]


def _clustered(rng, n_per_class=4, dim=16, noise=0.05):
    labels = np.repeat(np.arange(10), n_per_class)
    centres = rng.normal(size=(10, dim))
    emb = {m: centres[labels] + noise * rng.normal(size=(len(labels), dim)) for m in
           ("text", "video", "audio")}  # fmt: skip
    return {m: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            for m, x in emb.items()}, labels  # fmt: skip


def test_volume_scores_match_the_gram_volume():
    rng = np.random.default_rng(0)
    t, v, a = (scoring.unit_rows(rng.normal(size=(5, 8)).astype(np.float32)) for _ in range(3))
    for chunk_size in (None, 2):
        scores = scoring.tuple_scores(t, np.stack([v, a]), "volume", chunk_size=chunk_size)
        for i in range(5):
            for j in range(5):
                vol = float(gram_volume(np.stack([t[i], v[j], a[j]])))
                assert scores[i, j] == pytest.approx(-vol, abs=2e-5)


def test_area_symile_and_cosine_scores():
    rng = np.random.default_rng(1)
    t, v, a = (rng.normal(size=(3, 4)) for _ in range(3))
    u = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (t, v, a)]
    np.testing.assert_allclose(
        scoring.tuple_scores(t, np.stack([v, a]), "symile"),
        np.einsum("id,jd,jd->ij", *u),
        atol=1e-12,
    )
    # The mean of the cosines (the sum over the 2 modalities, halved).
    np.testing.assert_allclose(
        scoring.tuple_scores(t, np.stack([v, a]), "cosine"),
        (u[0] @ u[1].T + u[0] @ u[2].T) / 2,
        atol=1e-12,
    )
    area = scoring.tuple_scores(u[0], np.stack(u[1:]), "area")
    for i in range(3):
        for j in range(3):
            edges = np.stack([u[0][i] - u[1][j], u[0][i] - u[2][j]])
            expected = 0.5 * np.sqrt(np.linalg.det(edges @ edges.T))
            assert area[i, j] == pytest.approx(-expected, abs=1e-5)
    with pytest.raises(ValueError, match="scoring must be one of"):
        scoring.tuple_scores(t, v[None], "dot")
    with pytest.raises(ValueError, match="exactly 2 data modalities"):
        scoring.tuple_scores(t, v[None], "area")
    absent = np.array([[True, False, True], [True, True, True]])
    with pytest.raises(ValueError, match="'symile'.*absent"):
        scoring.tuple_scores(t, np.stack([v, a]), "symile", absent)


def test_zero_vectors_stay_zero_and_score_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(scoring.unit_rows(x), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    assert scoring.unit_rows(x).dtype == np.float32
    assert scoring.unit_rows(x.astype(np.float64)).dtype == np.float64
    cos = scoring.tuple_scores(x, x[None], "cosine")
    np.testing.assert_allclose(cos, [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    # A tuple holding a zero vector spans volume 0 (gram_jax/volume.py's rule), never NaN.
    vol = scoring.tuple_scores(x, x[None], "volume")
    assert np.all(np.isfinite(vol)) and vol[0, 1] == 0.0 and vol[1, 0] == 0.0


def test_report_recalls_are_the_evaluators_ranking_in_fractions():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(20, 20))
    scores[3] = 0.0  # a tied row: pessimistic in both
    table = report.rank_metrics(scores)
    metrics = retrieval_metrics(scores, np.arange(20))
    assert table["R@1"] * 100 == pytest.approx(metrics["R@1"])
    assert table["R@5"] * 100 == pytest.approx(metrics["R@5"])
    assert table["MdR"] == metrics["MdR"]


def test_rank_metrics_known_values():
    scores = np.array([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = report.rank_metrics(scores, labels=np.array([0, 0, 1]))
    # Ranks: row 0 -> 1; row 1 -> 2 (2.0 beats 1.0); row 2 -> 3 (all tied, pessimistic).
    assert out["R@1"] == pytest.approx(1 / 3) and out["MdR"] == 2.0
    # class@1: row 0 top is col 0 (same class); row 1 top is col 0 (same class); row 2 all tied:
    # one of three candidates shows class 1.
    assert out["class@1"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    with pytest.raises(ValueError, match="square"):
        report.rank_metrics(np.zeros((2, 3)))


def test_aligned_clusters_retrieve_their_class_and_collapse_is_detected(tmp_path):
    emb, labels = _clustered(np.random.default_rng(2))
    # Symile's multilinear score is not maximised by three equal vectors (it rewards large
    # same-sign coordinates), so only the geometric scorings are checked on plain clusters.
    for name in ("volume", "area", "cosine"):
        table = report.retrieval_table(emb, labels, name)
        assert all(m["class@1"] == 1.0 for m in table.values()), name
    emb["audio"] = np.tile(emb["audio"][:1], (len(labels), 1))  # audio collapsed to one vector
    collapse = report.collapse_metrics(emb)
    assert collapse["audio"]["mean_cos"] == pytest.approx(1.0)
    assert collapse["audio"]["variance"] == pytest.approx(0.0, abs=1e-9)
    assert collapse["video"]["variance"] > 0.5
    table = report.retrieval_table(emb, labels, "volume")
    assert table["video->audio"]["class@1"] == pytest.approx(0.1)  # chance: ties are pessimistic
    text = report.format_table(table, collapse, "t")
    assert "video->audio" in text and "audio" in text.splitlines()[-1]
    path = plots.plot_embeddings(emb, labels, tmp_path / "sub" / "emb.png", title="x")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_distinct_queries_count_each_text_once():
    """Repeated texts (TriDigits: one text per language and digit) are one query each; text
    identity is scored where both sides carry a text, and the printed table has no instance
    recall."""
    from gram_jax.evaluators import distinct, ranking

    emb, labels = _clustered(np.random.default_rng(3), n_per_class=4)
    n = len(labels)
    # Two languages per digit: records 0-1 of a digit say text "d-a", records 2-3 "d-b"; the text
    # embeddings of one text are equal, as a text tower's are.
    texts = np.array([f"{d}-{'ab'[i % 4 // 2]}" for i, d in enumerate(labels)])
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    emb["text"] = emb["text"][[first[t] for t in texts]]
    ids = {"text": texts, "video": np.arange(n), "audio": np.arange(n) // 2}
    out = distinct.split_metrics(emb, labels, ids)
    assert out["text->video"]["queries"] == 20 and out["text->video"]["candidates"] == n
    assert out["audio->video"]["queries"] == 20 and out["video->audio"]["candidates"] == 20
    assert out["video+audio->text/volume"]["queries"] == n
    assert out["text->video+audio/cosine"]["class@1"] == 1.0
    assert "text@1" in out["audio->text"] and "text@1" not in out["video->text"]
    assert out["audio_gain/volume"] == pytest.approx(
        out["text->video+audio/volume"]["class@1"] - out["text->video"]["class@1"]
    )
    # Ties are shared: a query whose two top candidates differ in key scores one half.
    assert ranking.top1_agreement(np.array([[1.0, 1.0, 0.0]]), [0], [0, 1, 0]) == 0.5
    printed = report.format_distinct(out, report.collapse_metrics(emb), "t")
    assert "class@1" in printed and "text@1" in printed and "R@1" not in printed
    records = [{"id": f"r{i}", "desc": t} for i, t in enumerate(texts)]
    assert distinct.record_identities(records)["video"].tolist() == [f"r{i}" for i in range(n)]


def test_pca_2d():
    x = np.array([[0.0, 0, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0]])
    xy, mean, comps = plots.pca_2d(x)
    np.testing.assert_allclose(np.abs(comps), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(mean, [1, 0.5, 0])
    assert xy.shape == (4, 2)
    with pytest.raises(ValueError, match="pca_2d"):
        plots.pca_2d(np.zeros(3))


def test_sweep_aggregation(tmp_path):
    mean, half = aggregate.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    assert aggregate.mean_ci([0.5]) == (0.5, 0.0)
    emb, labels = _clustered(np.random.default_rng(3))
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in range(2):
        split = sweep.split_record("volume", emb, labels)
        record = {
            "method": "gram",
            "fold": 0,
            "seed": seed,
            "splits": {"test": split, "test_seen": split},
            "positive_cos": {"text_video": [0.5, -0.5], "text_audio": [0.9], "video_audio": [0]},
            "curve": [
                {"step": s, "split": "test", **sweep.curve_point(s, "test", "volume", emb, labels)}
                for s in (1, 2)
            ],
        }
        (runs / f"gram_fold0_seed{seed}.json").write_text(json.dumps(record))
    results = tmp_path / "results.md"
    results.write_text("# R\n\nkept text\n")
    aggregate.write_results(runs, results)
    aggregate.write_results(runs, results)  # idempotent: the generated block is replaced
    text = results.read_text()
    assert text.count(aggregate.START) == 1 and "kept text" in text
    assert "| gram | 2 | 1.000 ± 0.000" in text
    assert "**class@1, held-out images, training recordings**" in text
    assert "training records" not in text  # no run evaluated that split
    # The diagnostics row: aligned clusters, no negative positive pair, video not collapsed.
    assert "| gram | 0.000 ± 0.000 | 0.000 ± 0.000 | 0.000 ± 0.000 | 1.000 ± 0.000" in text
    for name in ("tridigits_positive_cos.png", "tridigits_curves.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert "- gram: folds [0], seeds [0, 1]" in text  # what each method ran, from its records
    # A second named block (a longer budget) lives beside the first, with its own figures.
    aggregate.write_results(runs, results, name="long")
    text = results.read_text()
    assert text.count(aggregate.START) == 1 and text.count("<!-- long-table:start -->") == 1
    assert (tmp_path / "figures" / "long_curves.png").read_bytes()[:4] == b"\x89PNG"


def _run(method: str, seed: int, va: float, av: float, tv: float, fold: int = 0) -> dict:
    """A run record whose test split has the given class@1 values (the rest 0.5)."""
    names = ("text->video+audio", "video->audio", "audio->video", "text->video", "text->audio")
    retrieval = {d: {"class@1": 0.5} for d in names}
    retrieval["video->audio"]["class@1"] = va
    retrieval["audio->video"]["class@1"] = av
    retrieval["text->video"]["class@1"] = tv
    return {
        "method": method,
        "fold": fold,
        "seed": seed,
        "splits": {"test": {"retrieval": retrieval}},
    }


def test_paired_differences_match_seeds_and_average_video_audio():
    base = [_run("cosine_anchor", s, 0.1 * s, 0.2, 0.3) for s in range(3)]
    # Seed 3 has no baseline run and fold 1 a different test set: neither is paired.
    gram = [_run("gram", s, 0.1 * s + 0.05 * (s + 1), 0.2 + 0.1, 0.2) for s in range(4)]
    gram.append(_run("gram", 0, 0.9, 0.9, 0.9, fold=1))
    va = aggregate.paired_differences(gram, base, "test", "video->audio")
    assert va == pytest.approx([0.05, 0.10, 0.15])
    both = aggregate.paired_differences(gram, base, "test", "video<->audio")
    assert both == pytest.approx([(0.05 + 0.1) / 2, (0.10 + 0.1) / 2, (0.15 + 0.1) / 2])
    assert aggregate.paired_differences(gram, base, "test_seen", "video->audio") == []
    lines = aggregate._paired_table(
        {"cosine_anchor": base, "gram": gram}, ["cosine_anchor", "gram"], "test"
    )
    mean, half = aggregate.mean_ci([0.075, 0.1, 0.125])
    row = lines[-1]
    assert row.startswith("| gram | 3 | ")
    assert f"{mean:+.3f} ± {half:.3f} **+**" in row  # V↔A: the interval excludes 0
    assert "-0.100 ± 0.000 **−**" in row  # T→V: 0.2 - 0.3 in every pair


def test_paired_table_against_another_baseline_keeps_the_named_methods():
    base = [_run("cosine_all_pairs", s, 0.2, 0.2, 0.3) for s in range(2)]
    gram = [_run("gram_hybrid_all", s, 0.3, 0.2, 0.3) for s in range(2)]
    area = [_run("area", s, 0.1, 0.2, 0.3) for s in range(2)]
    by_method = {"cosine_all_pairs": base, "gram_hybrid_all": gram, "area": area}
    lines = aggregate._paired_table(by_method, list(by_method), "test", "cosine_all_pairs", "gram")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| gram_hybrid_all"]
    assert "+0.100 ± 0.000 **+**" in lines[-1]  # V→A: 0.3 - 0.2 in both pairs
