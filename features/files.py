"""Files written whole or not at all, and file hashes: the one place that does either.

Every output (feature store, shards, bundle files, reports, the demo corpus) is written to a temporary name in its
own folder, synced, and renamed over its final name in one step, so a reader sees the old file or the new one,
never half of one, and a failed write leaves the old file as it was. The temporary names, ``<name>.tmp-<pid>-<hex>``,
are ignored by git (``.gitignore``) and DVC (``.dvcignore``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from features.errors import DiskFull, is_disk_full

TEMP_MARK = ".tmp-"


def temp_path(path: str | Path) -> Path:
    """A fresh name next to ``path`` for it to be written under: unique to this process and call."""
    path = Path(path)
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the block to create (a file, a folder or a symlink); when the
    block succeeds it is synced and renamed over ``path`` in one step, when it raises it is removed and ``path``
    is left as it was (a full disk raises DiskFull naming ``path``). For writers that need a file name (h5py,
    safetensors, PyAV)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if is_disk_full(err):
            raise DiskFull(path) from err
        raise
    _sync_folder(path.parent)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode, **kwargs)`` for writing, atomically: the file object writes to a temporary name that
    replaces ``path`` when the block succeeds (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_text(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)`` (the same bytes), atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sync(path: Path) -> None:
    """Flush a written file, or every file of a written folder, to disk (a symlink needs nothing)."""
    if path.is_symlink():
        return
    if path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                _sync(Path(folder) / name)
            _sync_folder(Path(folder))
        return
    _fsync(path)


def _sync_folder(folder: Path) -> None:
    """Make the names in ``folder`` (a rename into it) durable."""
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
