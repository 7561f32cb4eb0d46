"""VAST-style annotation JSON -> :class:`Record` list, with dataset layouts and protocol switches.

The record format (id, captions, subtitle, extra fields) is parsed by ``data_pipelines.records``
(re-exported here); this module adds the dataset layouts' required fields and the reference's
protocol switches.

Protocol switches:
- ``caption_mode='first'`` keeps only the first caption of each row's list, as the released code
  does for every dataset (VATEX 10 -> 1, AudioCaps 5 -> 1; a file with one row per caption keeps
  every row, one training sample each, as the released dataset does); ``'all'`` keeps every
  caption (standard).
- ``repeated_ids='group'`` reads a file with one row per caption (the id repeated) as one record
  per video with its captions; ``'error'`` refuses repeated ids.
- :func:`filter_by_media` keeps the records whose media exist, the reference's audio-availability
  filter (MSR-VTT test: 884 of 1,000 videos); not calling it gives the full set.

Every error names the file, the record index and the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from data_pipelines.datasets import get_layout
from data_pipelines.records import (
    CAPTION_FIELDS,
    CAPTION_MODES,
    ID_FIELDS,
    REPEATED_ID_MODES,
    AnnotationError,
    Record,
    parse_record,
    read_annotation_list,
    read_records,
)

__all__ = [
    "CAPTION_FIELDS",
    "CAPTION_MODES",
    "ID_FIELDS",
    "REPEATED_ID_MODES",
    "AnnotationError",
    "Record",
    "caption_pairs",
    "filter_by_media",
    "load_records",
    "parse_record",
    "read_annotation_list",
]


def load_records(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    caption_mode: str = "all",
    require_captions: bool = True,
    repeated_ids: str = "group",
) -> list[Record]:
    """Parse a VAST-style annotation file.

    Args:
      path: the JSON file (a list of records).
      dataset: a layout name (``data_pipelines.datasets``: msrvtt, didemo, ...); its required
        fields are checked on every record, so a file of another dataset fails early.
      caption_mode: ``'all'`` or ``'first'`` (the first caption of each row, as released).
      require_captions: records without a caption field are an error (False: empty ``captions``,
        e.g. for classification lists).
      repeated_ids: ``'group'`` (rows sharing an id -> one record with their captions) or
        ``'error'`` (data_pipelines.records.read_records).

    Returns:
      list[Record] in file order (a record's position is its ``index`` in batches).
    """
    return read_records(
        path,
        required_fields=get_layout(dataset).required_fields if dataset is not None else (),
        layout_name=dataset,
        caption_mode=caption_mode,
        require_captions=require_captions,
        repeated_ids=repeated_ids,
    )


def caption_pairs(records: Sequence[Record]) -> list[tuple[int, int]]:
    """(record index, caption index) of every caption, in order: the text side of retrieval."""
    return [(i, k) for i, r in enumerate(records) for k in range(len(r.captions))]


def filter_by_media(
    records: Iterable[Record],
    available: dict[str, frozenset[str] | set[str]],
) -> tuple[list[Record], dict[str, list[str]]]:
    """Keep the records whose id is in every ``available[modality]`` set.

    The reference's audio-availability filter is ``available={'audio': ids_with_audio}`` (MSR-VTT
    test: 884 of 1,000). Returns (kept records, ``{modality: [dropped ids]}``) so the caller can
    report what was left out.
    """
    kept: list[Record] = []
    dropped: dict[str, list[str]] = {m: [] for m in available}
    for record in records:
        missing = [m for m, ids in available.items() if record.id not in ids]
        for m in missing:
            dropped[m].append(record.id)
        if not missing:
            kept.append(record)
    return kept, dropped
