"""Retrieval evaluation: text <-> data tuples (volume, cosine, matching re-rank) and modality pairs.

Metric names (R@1/5/10 and R@mean in percent, MdR/MnR 1-based ranks; see ranking.py):
  t2d/*, d2t/*                 volume scoring: text vs the whole data tuple (video, audio, ...)
  cosine/t2d/*, cosine/d2t/*   mean of the text-modality cosines
  area/t2d/*, symile/t2d/*, ...    the other tuple scorings of scoring.py (and their d2t)
  matching/t2d/*, matching/d2t/*   top_k by volume, re-scored by match_fn
  t2v/*, v2t/*, v2a/*, ...     cosine between two single modalities (abbreviations: text t,
                               video v, audio a, subtitle s, depth dp; others by full name), when
                               ``modality_pairs`` is on
  positive_volume              mean Vol(text, its own data tuple) over the text rows
  one_minus_gram               1 - positive_volume (the paper's 1 - GRAM alignment score)
  min_volume                   mean over texts of the smallest volume to any tuple (the released
                               code's "gramian_value")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from gram_jax import volume
from gram_jax.evaluators.base import Collected, EncodeFn, MatchFn, collect
from gram_jax.evaluators.ranking import prefixed, retrieval_metrics
from gram_jax.evaluators.scoring import (
    SCORINGS,
    cosine_scores,
    rerank_with_matching,
    tuple_scores,
    volume_scores,
)

ABBREVIATIONS = {"text": "t", "video": "v", "audio": "a", "subtitle": "s", "depth": "dp"}


def abbreviation(modality: str) -> str:
    return ABBREVIATIONS.get(modality, modality)


@dataclasses.dataclass(frozen=True)
class RetrievalLayout:
    """Who is a query and who a candidate, in valid-row positions (base.py docstring).

    text_rows: int[Nt] rows used as text queries; data_rows: int[Nd] rows holding the data items;
    text_to_data: int[Nt] the data position (0..Nd-1) of each text's ground-truth item.
    """

    text_rows: np.ndarray
    data_rows: np.ndarray
    text_to_data: np.ndarray

    @classmethod
    def from_collected(
        cls,
        col: Collected,
        anchor: str,
        *,
        require: tuple[str, ...] = (),
        captions: str = "all",
    ) -> RetrievalLayout:
        """Queries and candidates of a collected set under the protocol switches.

        require: drop records lacking any of these modalities (the reference keeps only MSR-VTT
          videos with audio: 884 of 1000). captions: 'all' (every caption is a query) or 'first'
          (only the smallest caption_index of each record; the reference's VATEX/AudioCaps rule).
        """
        if captions not in ("all", "first"):
            raise ValueError(f"captions: expected 'all' or 'first', got {captions!r}")
        eligible = np.ones(col.num_rows, bool)
        for m in require:
            if m not in col.present:
                raise KeyError(f"require: modality {m!r} was not collected ({sorted(col.present)})")
            eligible &= col.present[m]
        rows = np.flatnonzero(eligible)
        if rows.size == 0:
            raise ValueError(f"retrieval: no valid row has every modality of {require} present")
        # Data items: the first eligible row of each record index.
        _, first = np.unique(col.index[rows], return_index=True)
        data_rows = rows[np.sort(first)]
        text_rows = rows[col.present[anchor][rows]]
        if captions == "first":
            order = np.lexsort((col.caption_index[text_rows], col.index[text_rows]))
            _, first_cap = np.unique(col.index[text_rows][order], return_index=True)
            text_rows = np.sort(text_rows[order][first_cap])
        if text_rows.size == 0:
            raise ValueError(f"retrieval: no eligible row has present_{anchor} == True")
        data_ids = col.index[data_rows]
        order = np.argsort(data_ids, kind="stable")
        pos = np.searchsorted(data_ids[order], col.index[text_rows])
        return cls(text_rows, data_rows, order[pos])

    def d2t_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(data position, text position) pairs: every caption of an item is correct for it."""
        return self.text_to_data, np.arange(self.text_rows.shape[0])


@dataclasses.dataclass
class RetrievalEvaluator:
    """Retrieval in both directions; an `Evaluator` (base.py).

    Args:
      anchor: the text-like query modality.
      modalities: the data modalities forming a tuple, in Gram order (e.g. ('video', 'audio')).
      scorings: any of `scoring.SCORINGS` ('volume', 'area', 'symile', 'cosine', 'matching';
        'matching' needs match_fn in run()).
      top_k: candidates re-scored per query by 'matching' (reference: 50).
      chunk_size: candidate tuples per chunk of the volume scorer.
      modality_pairs: also report single-modality cosine retrieval for every ordered pair.
      match_batch_size: pairs per match_fn call.
      require: protocol switch, records lacking any of these modalities are left out entirely.
      captions: protocol switch, 'all' captions as queries or only the 'first' of each record.
    """

    anchor: str = "text"
    modalities: tuple[str, ...] = ("video", "audio")
    scorings: tuple[str, ...] = ("volume",)
    top_k: int = 50
    chunk_size: int = 4096
    modality_pairs: bool = True
    match_batch_size: int = 1024
    require: tuple[str, ...] = ()
    captions: str = "all"

    def __post_init__(self):
        unknown = [s for s in self.scorings if s not in SCORINGS]
        if unknown:
            raise ValueError(f"scorings: unknown {unknown}; expected a subset of {SCORINGS}")
        if not self.modalities:
            raise ValueError("modalities: at least one data modality is needed")
        if self.captions not in ("all", "first"):
            raise ValueError(f"captions: expected 'all' or 'first', got {self.captions!r}")

    def run(
        self,
        encode_fn: EncodeFn,
        batches: Iterable[Mapping[str, np.ndarray]],
        match_fn: MatchFn | None = None,
    ) -> dict[str, float]:
        if "matching" in self.scorings and match_fn is None:
            raise ValueError("scorings includes 'matching' but run() got no match_fn")
        col = collect(encode_fn, batches, (self.anchor, *self.modalities))
        return self.evaluate(col, match_fn)

    def evaluate(self, col: Collected, match_fn: MatchFn | None = None) -> dict[str, float]:
        """The metrics of already collected embeddings (see `run`)."""
        lay = RetrievalLayout.from_collected(
            col, self.anchor, require=self.require, captions=self.captions
        )
        text = col.embeddings[self.anchor][lay.text_rows]
        data = np.stack([col.embeddings[m][lay.data_rows] for m in self.modalities])
        present = np.stack([col.present[m][lay.data_rows] for m in self.modalities])
        d2t_gt = lay.d2t_pairs()
        out: dict[str, float] = {}
        base = None
        if "volume" in self.scorings or "matching" in self.scorings:
            base = volume_scores(text, data, present, chunk_size=self.chunk_size)
        if "volume" in self.scorings:
            out |= prefixed("t2d", retrieval_metrics(base, lay.text_to_data))
            out |= prefixed("d2t", retrieval_metrics(base.T, d2t_gt))
            out["min_volume"] = float(np.mean(-base.max(axis=1)))
        for name in self.scorings:
            if name in ("volume", "matching"):
                continue
            scores = tuple_scores(text, data, name, present)
            out |= prefixed(f"{name}/t2d", retrieval_metrics(scores, lay.text_to_data))
            out |= prefixed(f"{name}/d2t", retrieval_metrics(scores.T, d2t_gt))
        if "matching" in self.scorings:
            out |= self._matching(base, lay, match_fn)
        if self.modality_pairs:
            out |= self._pairs(col, lay)
        positive = volume.matched_volume(
            jnp.asarray(text),
            jnp.asarray(data[:, lay.text_to_data]),
            jnp.asarray(present[:, lay.text_to_data]),
        )
        out["positive_volume"] = float(np.mean(np.asarray(positive)))
        out["one_minus_gram"] = 1.0 - out["positive_volume"]
        return out

    def _matching(self, base, lay: RetrievalLayout, match_fn: MatchFn) -> dict[str, float]:
        t_rows, d_rows = lay.text_rows, lay.data_rows
        t2d = rerank_with_matching(
            base,
            lambda q, c: match_fn(t_rows[q], d_rows[c]),
            top_k=self.top_k,
            batch_size=self.match_batch_size,
        )
        d2t = rerank_with_matching(
            base.T,
            lambda q, c: match_fn(t_rows[c], d_rows[q]),
            top_k=self.top_k,
            batch_size=self.match_batch_size,
        )
        out = prefixed("matching/t2d", retrieval_metrics(t2d, lay.text_to_data))
        return out | prefixed("matching/d2t", retrieval_metrics(d2t, lay.d2t_pairs()))

    def _pairs(self, col: Collected, lay: RetrievalLayout) -> dict[str, float]:
        out: dict[str, float] = {}
        text = col.embeddings[self.anchor][lay.text_rows]
        t = abbreviation(self.anchor)
        identity = np.arange(lay.data_rows.shape[0])  # data item j matches itself
        single = {m: col.embeddings[m][lay.data_rows] for m in self.modalities}
        for m, emb in single.items():
            a = abbreviation(m)
            cos = cosine_scores(text, emb[None])
            out |= prefixed(f"{t}2{a}", retrieval_metrics(cos, lay.text_to_data))
            out |= prefixed(f"{a}2{t}", retrieval_metrics(cos.T, lay.d2t_pairs()))
            for m2, emb2 in single.items():
                if m2 != m:
                    cos2 = cosine_scores(emb, emb2[None])
                    out |= prefixed(f"{a}2{abbreviation(m2)}", retrieval_metrics(cos2, identity))
        return out
