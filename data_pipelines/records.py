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
    allow_duplicate_ids: bool = False,
) -> list[Record]:
    """Parse a VAST-style annotation file, checking ``required_fields`` on every record.

    Args:
      path: the JSON file (a list of records).
      required_fields: JSON keys every record must have (a dataset layout's ``required_fields``).
      layout_name: the layout that requires them, named in the error.
      caption_mode: ``'all'`` or ``'first'`` (the reference's single caption per record).
      require_captions: records without a caption field are an error (False: empty ``captions``,
        e.g. for classification lists).
      allow_duplicate_ids: two records with one id are an error by default: retrieval ground truth
        is keyed by id.

    Returns:
      list[Record] in file order (a record's position is its ``index`` in batches).
    """
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"caption_mode must be one of {CAPTION_MODES}, got {caption_mode!r}")
    records = []
    seen: dict[str, int] = {}
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
        if not allow_duplicate_ids and record.id in seen:
            raise AnnotationError(
                path, f"duplicate id {record.id!r} (first at record {seen[record.id]})", index=index
            )
        seen.setdefault(record.id, index)
        if caption_mode == "first" and len(record.captions) > 1:
            record = dataclasses.replace(record, captions=record.captions[:1])
        records.append(record)
    return records
