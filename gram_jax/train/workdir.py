"""Run directories: a local folder or an object-store URI (``gs://bucket/run``), one path type.

Everything a run reads or writes under its workdir (checkpoints, ``config.json``,
``metrics.jsonl``, TensorBoard events, ``best/``, ``checkpoints_set_aside/``) goes through
`etils.epath.Path`, the type orbax uses for its checkpoint directories: a local path is made
absolute (``run`` -> ``/current/dir/run``, as before), a URI is kept as it is (``pathlib`` would
turn ``gs://bucket/run`` into the local folder ``gs:/bucket/run``). ``gs://`` goes through
``gcsfs`` (for epath) and tensorstore's own GCS driver (for orbax's arrays); both take the host's
Google credentials.

Object stores differ from a file system in two ways the run code meets here: an object cannot be
appended to (`append_text` rewrites it), and a "folder" exists only while it holds an object, so a
rename into an empty folder is refused by epath (`move` copies and deletes instead).
"""

from __future__ import annotations

import os
import pathlib
import re

from etils import epath

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (``gs://...``, ``s3://...``) rather than a local path."""
    return bool(_URI.match(os.fspath(path)))


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URI unchanged, a local path made absolute (not resolved:
    symlinks stay as given, as with pathlib's absolute())."""
    if is_remote(path):
        return epath.Path(os.fspath(path))
    return epath.Path(pathlib.Path(path).absolute())


def append_text(path: epath.Path, text: str) -> None:
    """Appends `text` to the file `path` (creating it and its folder). Object stores have no
    append: the object is read and written again whole (a run's metrics file is small)."""
    path = epath.Path(path)
    if not is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(text)
        return
    old = path.read_text() if path.exists() else ""
    path.write_text(old + text)


def move(source: epath.Path, target: epath.Path) -> None:
    """Renames the file or folder `source` to `target` (which must not exist). On an object store
    every object is copied, then the source deleted: its folders are only name prefixes, so
    epath's rename into a fresh (empty, hence absent) folder is refused."""
    source, target = epath.Path(source), epath.Path(target)
    if not is_remote(source):
        source.rename(target)
        return
    if target.exists():
        raise FileExistsError(f"{target} already exists; not moving {source} there")
    if not source.is_dir():
        source.copy(target)
        source.unlink()
        return
    root = _without_scheme(source)
    for folder, _, files in source.walk():  # epath refuses rglob on GCS (one RPC per level)
        # walk names folders without the scheme ("bucket/run/..."): rebuild them under source.
        relative = _without_scheme(folder)[len(root) :].strip("/")
        for name in files:
            (source / relative / name).copy(target / relative / name)
    source.rmtree()


def _without_scheme(path) -> str:
    text = os.fspath(path)
    return _URI.sub("", text).rstrip("/")
