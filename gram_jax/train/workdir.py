"""Run directories: a local folder or an object-store URI (``gs://bucket/run``), one path type.

Everything a run reads or writes under its workdir (checkpoints, ``config.json``,
``metrics.jsonl``, TensorBoard events, ``best/``, ``checkpoints_set_aside/``) goes through
`etils.epath.Path`, the type orbax uses for its checkpoint directories: a local path is made
absolute (``run`` -> ``/current/dir/run``, as before), a URI is kept as it is (``pathlib`` would
turn ``gs://bucket/run`` into the local folder ``gs:/bucket/run``). ``gs://`` goes through
``gcsfs`` (for epath) and tensorstore's own GCS driver (for orbax's arrays); both take the host's
Google credentials. gcsfs and google-cloud-storage (TensorBoard's gs:// events) are setup.py's
``gcs`` extra (the ``tpu`` extra brings them too): a ``gs://`` path without them is refused at
`resolve`, naming the extra, rather than failing at the first write deep inside a run.

Object stores differ from a file system in two ways the run code meets here: an object cannot be
appended to (`append_text` rewrites it), and a "folder" exists only while it holds an object, so a
rename into an empty folder is refused by epath (`move` copies and deletes instead).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re

from etils import epath

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (``gs://...``, ``s3://...``) rather than a local path."""
    return bool(_URI.match(os.fspath(path)))


# The modules a URI scheme needs beyond the base install, and the extra that installs them.
_CLIENTS = {"gs": (("gcsfs", "google.cloud.storage"), "gcs")}


class MissingClientError(ImportError):
    """A URI whose scheme needs clients that are not installed (the console scripts refuse the run
    with exit code 2 and this one line)."""


def check_clients(uri: str) -> None:
    """Raises MissingClientError naming the missing modules and the pip extra when `uri`'s scheme
    needs clients that are not installed (``gs://`` without gcsfs / google-cloud-storage)."""
    scheme = uri.split("://", 1)[0].lower()
    modules, extra = _CLIENTS.get(scheme, ((), ""))
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingClientError(
            f"{uri}: {scheme}:// paths need {', '.join(missing)}, which the base install lacks; "
            f'install them with `pip install "gram_jax[{extra}]"` (from a clone: '
            f'`pip install -e ".[{extra}]"`)'
        )


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URI unchanged (its clients checked, `check_clients`), a local
    path made absolute (not resolved: symlinks stay as given, as with pathlib's absolute())."""
    if is_remote(path):
        check_clients(os.fspath(path))
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
