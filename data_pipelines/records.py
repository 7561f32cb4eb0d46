"""The VAST-style record format: one JSON list of objects -> :class:`Record` list.

A file is a JSON list of objects (reference section 4.1):
- id: the first present of ``clip_id``, ``video_id``, ``image_id``, ``image``, ``id`` (str or int);
- captions: the first present of ``desc``, ``caption``, ``vast_cap``: a string or a list of strings;
- ``subtitle``: optional string (empty strings are kept: 238 of the 1,000 MSR-VTT test videos);
- every other field (``audio_caption``, ``vision_cap``, ``begin_s`` ...) goes to ``extra``.

This module knows the format only; ``annotations.load_records`` adds the dataset layouts
(``data_pipelines.datasets``), which themselves read files through :func:`read_records`. Every
error names the file, the record index and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

ID_FIELDS = ("clip_id", "video_id", "image_id", "image", "id")
CAPTION_FIELDS = ("desc", "caption", "vast_cap")
CAPTION_MODES = ("all", "first")
# What rows sharing one id mean: 'group' merges them into one record (one video, its captions in
# file order: MSR-VTT and VATEX training files commonly hold one row per caption); 'error' refuses.
REPEATED_ID_MODES = ("group", "error")


class AnnotationError(ValueError):
    """A malformed annotation file or record.

    Attributes: ``path`` (the file), ``index`` (record position or None), ``field`` (or None).
    """

    def __init__(
        self, path: str | os.PathLike, message: str, *, index: int | None = None, field=None
    ):
        self.path = str(path)
        self.index = index
        self.field = field
        where = self.path
        if index is not None:
            where += f", record {index}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self._message = message

    def __reduce__(self):
        # Keep the fields across processes (the default would call __init__ with one argument).
        return (_rebuild_annotation_error, (self.path, self._message, self.index, self.field))


def _rebuild_annotation_error(path, message, index, field) -> AnnotationError:
    return AnnotationError(path, message, index=index, field=field)


@dataclasses.dataclass(frozen=True)
class Record:
    """One annotated item.

    Attributes:
      id: the media id (str; integer ids are converted).
      captions: one or more non-empty caption strings.
      subtitle: the subtitle/ASR text, None when the record has none ('' is kept as given).
      extra: the record's other fields, unchanged.
    """

    id: str
    captions: tuple[str, ...]
    subtitle: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


def _record_id(raw: dict, path, index: int) -> tuple[str, str]:
    for field in ID_FIELDS:
        if field in raw and raw[field] is not None:
            value = raw[field]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise AnnotationError(
                    path,
                    f"expected a string or integer id, got {value!r}",
                    index=index,
                    field=field,
                )
            value = str(value)
            if not value.strip():
                raise AnnotationError(path, "the id is empty", index=index, field=field)
            return field, value
    raise AnnotationError(
        path,
        f"no id field: expected one of {', '.join(ID_FIELDS)}; keys are {sorted(raw)}",
        index=index,
    )


def _record_captions(raw: dict, path, index: int, required: bool) -> tuple[str | None, tuple]:
    for field in CAPTION_FIELDS:
        if field not in raw:
            continue
        value = raw[field]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise AnnotationError(
                path,
                f"expected a caption string or a non-empty list of strings, got {value!r}",
                index=index,
                field=field,
            )
        for k, caption in enumerate(items):
            name = field if isinstance(value, str) else f"{field}[{k}]"
            if not isinstance(caption, str):
                raise AnnotationError(
                    path, f"expected a string caption, got {caption!r}", index=index, field=name
                )
            if not caption.strip():
                raise AnnotationError(path, "the caption is empty", index=index, field=name)
        return field, tuple(items)
    if required:
        raise AnnotationError(
            path,
            f"no caption field: expected one of {', '.join(CAPTION_FIELDS)}; "
            f"keys are {sorted(raw)}",
            index=index,
        )
    return None, ()


def parse_record(
    raw: Any, *, path: str | os.PathLike, index: int, require_captions: bool = True
) -> Record:
    """One JSON object -> :class:`Record` (all captions). Raises :class:`AnnotationError`."""
    if not isinstance(raw, dict):
        raise AnnotationError(
            path, f"expected a JSON object, got {type(raw).__name__}", index=index
        )
    id_field, record_id = _record_id(raw, path, index)
    caption_field, captions = _record_captions(raw, path, index, require_captions)
    subtitle = raw.get("subtitle")
    if subtitle is not None and not isinstance(subtitle, str):
        raise AnnotationError(
            path, f"expected a string subtitle, got {subtitle!r}", index=index, field="subtitle"
        )
    extra = {k: v for k, v in raw.items() if k not in (id_field, caption_field, "subtitle")}
    return Record(id=record_id, captions=captions, subtitle=subtitle, extra=extra)


def read_annotation_list(path: str | os.PathLike) -> list:
    """The JSON list in ``path``; :class:`AnnotationError` if missing, invalid or not a list."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise AnnotationError(path, "annotation file does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(
            path, f"cannot read the annotation file as UTF-8 text: {err}"
        ) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            path, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a JSON list of records, got {type(data).__name__}")
    return data


def read_records(
    path: str | os.PathLike,
    *,
    required_fields: Sequence[str] = (),
    layout_name: str | None = None,
    caption_mode: str = "all",
    require_captions: bool = True,
    repeated_ids: str = "group",
) -> list[Record]:
    """Parse a VAST-style annotation file, checking ``required_fields`` on every record.

    Two shapes of the same data are read alike: one row per caption (the id repeated on every
    row) and one row per video with a list of captions.

    Args:
      path: the JSON file (a list of records).
      required_fields: JSON keys every record must have (a dataset layout's ``required_fields``).
      layout_name: the layout that requires them, named in the error.
      caption_mode: ``'all'`` keeps every caption; ``'first'`` keeps the first caption *of each
        row* (a list's element 0), the released code's rule: a row-per-caption file keeps every
        row's caption (the released dataset trains one sample per row), a caption-list file one
        caption per video.
      require_captions: records without a caption field are an error (False: empty ``captions``,
        e.g. for classification lists).
      repeated_ids: ``'group'`` (default): rows with one id become one record with the rows'
        captions in file order (their subtitles must agree; other fields are the first row's);
        ``'error'``: a repeated id is an error (retrieval ground truth is keyed by id).

    Returns:
      list[Record] in order of first appearance (a record's position is its ``index`` in
      batches).
    """
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"caption_mode must be one of {CAPTION_MODES}, got {caption_mode!r}")
    if repeated_ids not in REPEATED_ID_MODES:
        raise ValueError(f"repeated_ids must be one of {REPEATED_ID_MODES}, got {repeated_ids!r}")
    records: list[Record] = []
    seen: dict[str, tuple[int, int]] = {}  # id -> (first row, position in `records`)
    for index, raw in enumerate(read_annotation_list(path)):
        record = parse_record(raw, path=path, index=index, require_captions=require_captions)
        for field in required_fields:
            if field not in raw:
                raise AnnotationError(
                    path,
                    f"missing, and required by the {layout_name!r} layout",
                    index=index,
                    field=field,
                )
        if caption_mode == "first" and len(record.captions) > 1:
            record = dataclasses.replace(record, captions=record.captions[:1])
        if record.id not in seen:
            seen[record.id] = (index, len(records))
            records.append(record)
            continue
        first_row, position = seen[record.id]
        if repeated_ids == "error":
            raise AnnotationError(
                path,
                f"duplicate id {record.id!r} (first at record {first_row}); "
                "data.repeated_ids='group' reads one row per caption",
                index=index,
            )
        group = records[position]
        if record.subtitle != group.subtitle:
            raise AnnotationError(
                path,
                f"id {record.id!r} repeats record {first_row} with another subtitle "
                f"({record.subtitle!r} vs {group.subtitle!r}); rows of one video must agree",
                index=index,
                field="subtitle",
            )
        records[position] = dataclasses.replace(group, captions=group.captions + record.captions)
    return records


def count_rows(path: str | os.PathLike) -> int:
    """The number of rows (JSON objects) in an annotation file, before grouping."""
    return len(read_annotation_list(path))
