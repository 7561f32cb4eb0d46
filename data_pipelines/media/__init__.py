"""Media decoding (video frames, audio filterbanks, text tokens) and media-file lookup.

The released GRAM code finds a media file by globbing the whole folder for every sample and keeping
the first path that *starts with* ``folder/id`` (reference section 4.2), so ``video1`` can load
``video10.mp4``. Here a directory is listed once into an index keyed by the exact file stem, and a
lookup is a dict access.
"""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Sequence

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".mp3",
    ".wav",
    ".m4a",
    ".aac",
    ".flac",
    ".ogg",
    ".mkv",
    ".mp4",
)


class MediaError(Exception):
    """A media file that cannot be used: missing, empty, undecodable, or without the needed stream.

    Attributes:
      path: the file (or the directory plus id when the file was not found).
      reason: what was wrong and what was expected, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Grain workers pickle exceptions back to the main process; keep both fields.
        return (type(self), (self.path, self.reason))


class MediaIndex:
    """Exact-stem index of one directory: ``{stem: {extension: path}}``, built by one listing.

    Only regular files directly inside the directory are indexed (no recursion), matching the flat
    ``<id>.<ext>`` layout of every dataset the reference supports.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        if not self.directory.is_dir():
            raise MediaError(self.directory, "media directory does not exist or is not a directory")
        self._by_stem: dict[str, dict[str, pathlib.Path]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.is_file():
                    continue
                stem, ext = os.path.splitext(entry.name)
                self._by_stem.setdefault(stem, {})[ext.lower()] = pathlib.Path(entry.path)

    def __len__(self) -> int:
        return len(self._by_stem)

    def stems(self) -> frozenset[str]:
        """All file stems of the directory (ids with at least one file)."""
        return frozenset(self._by_stem)

    def find(self, media_id: str, extensions: Sequence[str]) -> pathlib.Path | None:
        """The file with stem exactly ``media_id``, trying ``extensions`` in order; else None."""
        candidates = self._by_stem.get(media_id)
        if not candidates:
            return None
        for ext in extensions:
            path = candidates.get(_dotted(ext))
            if path is not None:
                return path
        return None


def _dotted(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


# resolved directory -> (its mtime when listed, index); one entry per directory.
_INDEX_CACHE: dict[str, tuple[int, MediaIndex]] = {}
_INDEX_LOCK = threading.Lock()


def media_index(directory: str | os.PathLike) -> MediaIndex:
    """The cached :class:`MediaIndex` of ``directory``.

    The directory is listed again when its modification time changed, so files added or removed
    later (e.g. by ``gram-data prepare`` or a test) are seen without restarting the process.
    """
    resolved = pathlib.Path(directory).resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except FileNotFoundError as err:
        raise MediaError(resolved, "media directory does not exist") from err
    key = str(resolved)
    with _INDEX_LOCK:
        cached = _INDEX_CACHE.get(key)
        if cached is None or cached[0] != mtime:
            cached = (mtime, MediaIndex(resolved))
            _INDEX_CACHE[key] = cached
    return cached[1]


def find_media(
    directory: str | os.PathLike, media_id: str, extensions: Sequence[str]
) -> pathlib.Path | None:
    """The file ``directory/<media_id><ext>`` for the first ``ext`` in ``extensions`` that exists.

    Matches the stem exactly: id ``video1`` never resolves to ``video10.mp4``. Returns None when no
    file has that stem and one of those extensions; raises :class:`MediaError` when the directory
    itself is missing.
    """
    return media_index(directory).find(str(media_id), extensions)


def require_media(
    directory: str | os.PathLike, media_id: str, extensions: Sequence[str], kind: str
) -> pathlib.Path:
    """:func:`find_media`, but a missing file raises :class:`MediaError` naming dir, id and exts."""
    path = find_media(directory, media_id, extensions)
    if path is None:
        exts = ", ".join(_dotted(e) for e in extensions)
        raise MediaError(
            pathlib.Path(directory) / str(media_id),
            f"no {kind} file with stem {media_id!r} and one of the extensions {exts}",
        )
    return path


__all__ = [
    "AUDIO_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MediaError",
    "MediaIndex",
    "find_media",
    "media_index",
    "require_media",
]
