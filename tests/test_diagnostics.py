"""Alignment diagnostics (gram_jax.evaluators.diagnostics) against a plain-loop NumPy oracle, and
on the two failure modes they exist for: a sign-flipped alignment and a collapsed modality."""

from __future__ import annotations

import numpy as np
import pytest

from gram_jax.evaluators import diagnostics


def _oracle_unit(x):
    return [np.asarray(v, np.float64) / np.sqrt(sum(float(c) ** 2 for c in v)) for v in x]


def _oracle_rank_at_1(scores, correct):
    """Fraction of queries whose best correct score beats every incorrect one (ties count
    against the query), as the ranking module defines R@1, in percent."""
    hits = 0
    for q in range(len(scores)):
        best = max(scores[q][c] for c in range(len(scores[q])) if correct(q, c))
        wrong = sum(1 for c in range(len(scores[q])) if not correct(q, c) and scores[q][c] >= best)
        hits += wrong == 0
    return 100.0 * hits / len(scores)


def _oracle(emb, labels, a, b):
    ua, ub = _oracle_unit(emb[a]), _oracle_unit(emb[b])
    n = len(ua)
    pos = [float(np.dot(ua[i], ub[i])) for i in range(n)]
    cos = [[float(np.dot(ua[i], ub[j])) for j in range(n)] for i in range(n)]
    absolute = [[abs(c) for c in row] for row in cos]
    same = lambda q, c: labels[q] == labels[c]  # noqa: E731
    own = lambda q, c: q == c  # noqa: E731
    return {
        "neg": sum(p < 0 for p in pos) / n,
        "mean_pos": sum(pos) / n,
        "abs_r1": _oracle_rank_at_1(absolute, own),
        "class_r1": _oracle_rank_at_1(cos, same),
        "abs_class_r1": _oracle_rank_at_1(absolute, same),
    }


def _oracle_collapse(x):
    u = _oracle_unit(x)
    n = len(u)
    off = [float(np.dot(u[i], u[j])) for i in range(n) for j in range(n) if i != j]
    mean = [sum(v[d] for v in u) / n for d in range(len(u[0]))]
    var = sum(sum((v[d] - mean[d]) ** 2 for v in u) / n for d in range(len(u[0])))
    return sum(off) / len(off), var


def test_diagnostics_match_the_loop_oracle():
    rng = np.random.default_rng(0)
    n, d = 23, 5
    labels = rng.integers(0, 4, n)
    emb = {m: rng.normal(size=(n, d)) for m in ("text", "video", "audio")}
    emb["audio"] = emb["text"] + 0.8 * rng.normal(size=(n, d))  # partly aligned pair
    out = diagnostics.alignment_diagnostics(emb, [("text", "audio"), ("video", "audio")], labels)
    for a, b, x, y in (("text", "audio", "t", "a"), ("video", "audio", "v", "a")):
        ref = _oracle(emb, labels, a, b)
        assert out[f"sign/{x}_{y}/neg_positive_fraction"] == pytest.approx(ref["neg"])
        assert out[f"sign/{x}_{y}/mean_positive_cos"] == pytest.approx(ref["mean_pos"])
        assert out[f"abs/{x}2{y}/R@1"] == pytest.approx(ref["abs_r1"])
        assert out[f"class/{x}2{y}/R@1"] == pytest.approx(ref["class_r1"])
        assert out[f"abs_class/{x}2{y}/R@1"] == pytest.approx(ref["abs_class_r1"])
        back = _oracle({a: emb[b], b: emb[a]}, labels, a, b)  # the reverse direction
        assert out[f"abs/{y}2{x}/R@1"] == pytest.approx(back["abs_r1"])
    for m in emb:
        mean_cos, var = _oracle_collapse(emb[m])
        assert out[f"collapse/{m}/mean_cos"] == pytest.approx(mean_cos)
        assert out[f"collapse/{m}/variance"] == pytest.approx(var)


def test_a_sign_flipped_alignment_is_seen_only_by_the_sign_invariant_metrics():
    rng = np.random.default_rng(1)
    n = 40
    text = rng.normal(size=(n, 8))
    # Audio = text up to a random sign per record: the volume cannot tell these apart.
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]
    emb = {"text": text, "audio": sign * text}
    out = diagnostics.pair_diagnostics(emb, [("text", "audio")])
    assert out["abs/t2a/R@1"] == 100.0  # aligned up to sign
    assert out["sign/t_a/neg_positive_fraction"] == pytest.approx(np.mean(sign < 0))
    assert out["sign/t_a/mean_positive_cos"] == pytest.approx(np.mean(sign))


def test_a_constant_modality_reads_collapsed():
    rng = np.random.default_rng(2)
    emb = {"video": np.ones((10, 4)) + 1e-9 * rng.normal(size=(10, 4)), "text": np.eye(10, 4)}
    out = diagnostics.collapse_metrics(emb)
    assert out["video"]["mean_cos"] == pytest.approx(1.0)
    assert out["video"]["variance"] == pytest.approx(0.0, abs=1e-12)
    assert out["text"]["mean_cos"] == pytest.approx(0.0)


def test_retrieval_evaluator_reports_the_diagnostics_of_complete_records():
    """The evaluator's diagnostics use one row per record (its first caption) among the records
    that have every modality, with their labels; equal to calling the module on those rows."""
    from gram_jax.evaluators import RetrievalEvaluator

    rng = np.random.default_rng(5)
    n, d = 10, 6
    labels = np.arange(n) % 3
    media = {m: rng.normal(size=(n, d)) for m in ("video", "audio")}
    text = rng.normal(size=(n, d))
    has_audio = np.arange(n) != 4  # record 4 lacks audio: left out of the diagnostics
    batch = {
        "index": np.arange(n, dtype=np.int32),
        "caption_index": np.zeros(n, np.int32),
        "label": labels,
        "present_audio": has_audio,
        "present_video": np.ones(n, bool),
    }

    def encode(b):
        return {"text": text[b["index"]], **{m: v[b["index"]] for m, v in media.items()}}

    got = RetrievalEvaluator(label_key="label").run(encode, [batch])
    keep = np.flatnonzero(has_audio)
    emb = {"text": text[keep], **{m: v[keep] for m, v in media.items()}}
    pairs = [("text", "video"), ("text", "audio"), ("video", "audio")]
    want = diagnostics.alignment_diagnostics(emb, pairs, labels[keep])
    assert {k: got[k] for k in want} == pytest.approx(want)
    ref = _oracle(emb, labels[keep], "video", "audio")
    assert got["abs_class/v2a/R@1"] == pytest.approx(ref["abs_class_r1"])
    assert "class/t2v/R@1" in got and "collapse/video/mean_cos" in got
    plain = RetrievalEvaluator(diagnostics=False).run(encode, [batch])
    assert not [k for k in plain if k.startswith(("sign/", "abs/", "collapse/"))]
