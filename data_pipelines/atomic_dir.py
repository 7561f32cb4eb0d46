"""Directories published whole: fill a private sibling, then rename it into place.

Caches (the TriDigits build, its unpacked sources) are shared by every process of a user, so two
builders may run at once and a killed one may leave a half-written folder behind. Readers must
only ever see a complete folder or none. A builder therefore writes into ``staging_dir(final)``
(a fresh hidden folder in the same parent, hence on the same file system) and then calls
``publish_dir``: ``os.rename`` of a directory is atomic, and it never merges into a non-empty one.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable


def staging_dir(final: str | os.PathLike) -> pathlib.Path:
    """A new empty directory ``.<name>.<random>.partial`` beside ``final`` (parents created)."""
    final = pathlib.Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    )


def publish_dir(
    staged: str | os.PathLike,
    final: str | os.PathLike,
    is_complete: Callable[[pathlib.Path], bool] = lambda _: False,
) -> bool:
    """Renames ``staged`` to ``final``; returns True if ``staged`` is now ``final``.

    If ``final`` exists and ``is_complete(final)`` (e.g. a concurrent builder finished first),
    ``staged`` is deleted and ``final`` kept: False. Otherwise whatever is at ``final`` (a stale or
    partial leftover, an outdated build) is moved aside and deleted, and ``staged`` takes its place.
    A concurrent publisher that wins the race between the two renames keeps its folder: False.
    """
    staged, final = pathlib.Path(staged), pathlib.Path(final)
    if final.exists() and is_complete(final):
        shutil.rmtree(staged)
        return False
    old = None
    if final.exists() or final.is_symlink():
        old = pathlib.Path(
            tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent)
        )
        try:
            os.rename(final, old / final.name)
        except FileNotFoundError:  # a concurrent publisher moved it first
            pass
    try:
        os.rename(staged, final)
        return True
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        shutil.rmtree(staged)  # a concurrent publisher put its folder there in between
        return False
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
