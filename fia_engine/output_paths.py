"""Where a command may write: checks of output paths before any work, and atomic writes.

The checks run before the slow part of a command, so a bad ``--out`` costs a second, not an
hour. They raise OutputPathError (an InvalidInputError: the CLIs print it as one ``error:``
line and exit 2) for an output that exists without ``overwrite``, one that is a folder (or a
file where a folder is wanted), one that lies under a file, and a folder that cannot be
written to (read-only, no permission, read-only file system). Writability is probed by
creating and removing a temporary file, since permission bits say nothing for root.

Missing parent folders are allowed (``make_parents``, the default): the writers create them
and remove the ones they created if the write fails.

The writers (atomic_file, atomic_dir) build the output under a temporary name beside it and
move it into place with one rename at the end; on any failure, Ctrl-C included, the
temporary file or folder is removed and an older output stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError

_PROBE_PREFIX = ".fia-write-probe-"


def check_output_file(
    path: str | os.PathLike, *, overwrite: bool, what: str = "output", make_parents: bool = True
) -> Path:
    """``path`` as a Path if a file may be written there; OutputPathError otherwise.

    An existing file is refused unless ``overwrite``, and then still if it is read-only.
    """
    path = Path(path)
    if not path.name or path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputPathError(f"{what} {path} already exists; pass --overwrite to replace it")
        if not path.is_file():
            raise OutputPathError(f"{what} {path} exists and is not a regular file")
        if not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise OutputPathError(f"{what} {path} is read-only; make it writable or choose another path")
    _check_writable_parent(path, what, make_parents)
    return path


def check_output_dir(
    path: str | os.PathLike, *, exist_ok: bool, what: str = "output folder", make_parents: bool = True
) -> Path:
    """``path`` as a Path if a folder may be written there; OutputPathError otherwise.

    ``exist_ok``: files go into the folder (it may exist already, and must then be writable);
    otherwise the folder is made new and an existing one is refused.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputPathError(f"{what} {path} is a file, not a folder")
        if not exist_ok:
            raise OutputPathError(f"{what} {path} already exists; choose a new folder")
        _probe_writable(path, what, path)
        return path
    _check_writable_parent(path, what, make_parents)
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``.

    The temporary name ends with ``path``'s suffix (writers that pick a format by extension
    still work). On any exception, KeyboardInterrupt included, it is removed, with the parent
    folders this call created, and the exception goes on.
    """
    path = Path(path)
    created = _make_parents(path.parent)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(handle)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, _mode_for(path, 0o666))  # mkstemp makes it private (0600)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except BaseException:
        _remove_empty(created)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new staging folder beside ``path`` to fill; on success it is renamed to ``path``.

    ``path`` must not exist. On any exception the staging folder and the parent folders this
    call created are removed, and the exception goes on.
    """
    path = Path(path)
    created = _make_parents(path.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield staging
            os.chmod(staging, _mode_for(path, 0o777))  # mkdtemp makes it private (0700)
            staging.rename(path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except BaseException:
        _remove_empty(created)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _check_writable_parent(path: Path, what: str, make_parents: bool) -> None:
    parent = path.parent
    ancestor = parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{what} {path} lies under {ancestor}, which is a file, not a folder")
    if ancestor != parent and not make_parents:
        raise OutputPathError(f"{what} {path}: the folder {parent} does not exist")
    _probe_writable(ancestor, what, path)


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=folder)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputPathError(f"{what} {path}: cannot write in {folder} ({reason})") from None
    os.close(handle)
    os.unlink(probe)


def _mode_for(path: Path, default: int) -> int:
    """The permission bits of the file being replaced, or ``default`` less the umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for item in reversed(missing):
            item.mkdir()
            created.insert(0, item)
    except BaseException:
        _remove_empty(created)
        raise
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
