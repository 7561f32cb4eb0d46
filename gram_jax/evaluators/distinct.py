"""Retrieval over distinct queries and candidates: metrics that mean something with repeated items.

Used by the quickstart's report (report.py) and the TriDigits fine-tuning experiment. On
TriDigits (the motivating case) a text is a function of (language, digit), a recording of (voice,
digit), so a test split of N records holds N images but only ~40 distinct texts and ~40 distinct
recordings: an instance recall (the query's own record among N) is bounded far below 1 and
counts one text N/40 times. Here every direction ranks distinct candidates for distinct queries:

- queries and candidates are deduplicated by their identity (``identities``: a text its string, a
  video its image, a recording its clip; a (video, audio) tuple the pair), and ``queries`` records
  how many distinct queries a number is counted over;
- ``class@1``: the top candidate shows the query's digit (ties shared, `ranking.top1_agreement`;
  chance 0.1);
- ``text@1`` where both sides carry a text identity: the top candidate is the query's own text
  (chance 1 / number of distinct texts). Between texts and (video, audio) tuples the identity is
  the whole text (a tuple fixes its record's text); between texts and recordings it is the
  ``word`` identity, what a recording fixes (TriDigits: language and digit; the text itself unless
  the texts are captions that also describe the video). Undefined between text and video alone.

Directions: the primaries ``video+audio->text`` ((v, a) tuples rank texts) and
``text->video+audio``, each scored by the Gram volume (``/volume``) and by the sum of the two
text-anchored cosines (``/cosine``); the pairwise directions by cosine. ``audio_gain/<scoring>``:
class@1 of text->video+audio minus that of text->video (what adding audio to the candidate buys);
``positive_share``: the fraction of records with cos(v, a) > cos(t, v) cos(t, a) (the video-audio
alignment beyond what the text-anchored alignments imply).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gram_jax.evaluators.ranking import top1_agreement
from gram_jax.evaluators.scoring import tuple_scores, unit_rows

PRIMARY = ("video+audio->text", "text->video+audio")
TUPLE_SCORINGS = ("volume", "cosine")
PAIRWISE = (
    ("text", "video"),
    ("text", "audio"),
    ("video", "audio"),
    ("audio", "video"),
    ("video", "text"),
    ("audio", "text"),
)


def record_identities(records: list[Mapping]) -> dict[str, np.ndarray]:
    """Identities (str[N]) of annotation records: text ``desc``; word ``word`` (TriDigits caption
    builds: the number word of the caption) or else ``desc``; video ``image_index`` (TriDigits:
    the source image) or else ``id``; audio ``audio_source`` (the recording's file) or else ``id``
    (each record's medium its own)."""
    return {
        "text": np.array([str(r["desc"]) for r in records]),
        "word": np.array([str(r.get("word", r["desc"])) for r in records]),
        "video": np.array([str(r.get("image_index", r["id"])) for r in records]),
        "audio": np.array([str(r.get("audio_source", r["id"])) for r in records]),
    }


def _with_tuples(identities: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = {m: np.asarray(identities[m]).astype(str) for m in ("text", "video", "audio")}
    keys["video+audio"] = np.char.add(np.char.add(keys["video"], "/"), keys["audio"])
    return keys


def _first(keys: np.ndarray) -> np.ndarray:
    """Row of the first record of each distinct key, in record order."""
    _, rows = np.unique(keys, return_index=True)
    return np.sort(rows)


def _metrics(scores, q_rows, c_rows, labels, texts, with_text: bool) -> dict:
    out = {
        "class@1": top1_agreement(scores, labels[q_rows], labels[c_rows]),
        "queries": int(len(q_rows)),
        "candidates": int(len(c_rows)),
    }
    if with_text:
        out["text@1"] = top1_agreement(scores, texts[q_rows], texts[c_rows])
    return out


def split_metrics(
    embeddings: Mapping[str, np.ndarray], labels, identities: Mapping[str, np.ndarray]
) -> dict:
    """{direction: {'class@1', 'text@1' (where defined), 'queries', 'candidates'}} plus
    ``audio_gain/<scoring>`` and ``positive_share`` of one split.

    Args:
      embeddings: {'text', 'video', 'audio': float[N, D]} of the split's N records (any norm).
      labels: int[N] classes (TriDigits: the digit).
      identities: {'text', 'video', 'audio': [N]} identity of each record's item (equal values:
        the same item; `record_identities`), optionally 'word' (what a recording fixes of the
        text; default: the text).
    """
    unit = {m: unit_rows(np.asarray(embeddings[m], np.float64)) for m in ("text", "video", "audio")}
    labels = np.asarray(labels)
    keys = _with_tuples(identities)
    texts = keys["text"]
    words = np.asarray(identities.get("word", texts)).astype(str)
    rows = {m: _first(k) for m, k in keys.items()}
    out: dict = {}
    t_rows, va_rows = rows["text"], rows["video+audio"]
    for scoring in TUPLE_SCORINGS:
        # One score matrix [texts, tuples]; its transpose ranks texts for each tuple.
        scores = tuple_scores(
            unit["text"][t_rows],
            np.stack([unit["video"][va_rows], unit["audio"][va_rows]]),
            scoring,
        )
        out[f"text->video+audio/{scoring}"] = _metrics(scores, t_rows, va_rows, labels, texts, True)
        out[f"video+audio->text/{scoring}"] = _metrics(
            scores.T, va_rows, t_rows, labels, texts, True
        )
    for q, c in PAIRWISE:
        scores = unit[q][rows[q]] @ unit[c][rows[c]].T
        out[f"{q}->{c}"] = _metrics(scores, rows[q], rows[c], labels, words, "video" not in (q, c))
    for scoring in TUPLE_SCORINGS:
        out[f"audio_gain/{scoring}"] = (
            out[f"text->video+audio/{scoring}"]["class@1"] - out["text->video"]["class@1"]
        )
    cos = {
        p: np.sum(unit[p[0]] * unit[p[1]], axis=1)
        for p in (("text", "video"), ("text", "audio"), ("video", "audio"))
    }
    beyond = cos[("video", "audio")] > cos[("text", "video")] * cos[("text", "audio")]
    out["positive_share"] = float(np.mean(beyond))
    return out
