"""Media SHA-256s remembered by file stat, so that media whose stat did not change are never read again.

Shard keys and the retrain flow's annotation hash both need the SHA-256 of every source video; on MOSEI that is
thousands of files and many GiB read on every run. The index maps a file's absolute path to the (size, mtime_ns,
inode) it had when it was hashed and the SHA-256 of its bytes: a lookup whose stat matches returns the stored hash,
any other stat re-hashes the file, as DVC's own state database does. The hash is always that of the bytes
(``file_sha256``): the index only decides when it may be remembered instead of computed.

Storage: one SQLite file (stdlib ``sqlite3``), one transaction per new hash, so concurrent runs (threads,
processes, Dask workers sharing the cache folder) never overwrite each other and a ``kill -9`` loses at most the
hash being computed. It uses SQLite's rollback journal, not WAL, which needs memory shared between processes and
so does not work on the network file systems a multi-machine shard cache lives on. The file is only a cache: one
that is not an index of this schema (damaged, truncated, something else) is replaced by an empty index, with a
warning naming it, and its media are hashed again.

Racy stats: a file rewritten within the same mtime tick as its hashing keeps its stat while its bytes change (git's
"racy" entries). A hash is therefore only recorded once the file's mtime is ``RACY_SECONDS`` old; until then every
lookup hashes the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from filelock import FileLock

from features.errors import DiskFull
from features.files import file_sha256

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # PRAGMA user_version of an index of this layout (0: a new, empty file)
RACY_SECONDS = 2.0  # mtime granularity of the coarsest file systems we expect (FAT, some NFS servers)
BUSY_TIMEOUT_S = 60.0  # how long a lookup waits for another process's write
_SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    path TEXT PRIMARY KEY,  -- absolute, as given (not resolved: a symlink is its own entry)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL
)
"""
_UNUSABLE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
Stamp = tuple[int, int, int]  # size, mtime_ns, inode


class _OtherSchema(Exception):
    """A readable SQLite file that is not a media index of SCHEMA_VERSION."""


class MediaHashes:
    """The SHA-256 of media files, through the stat index at ``path`` (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def sha256(self, media: str | Path) -> str:
        """Hex SHA-256 of one file's bytes; OSError if it cannot be read."""
        return self.sha256_all([media])[0]

    def sha256_all(self, files: Iterable[str | Path]) -> list[str]:
        """Hex SHA-256 of each file's bytes, in order, through one connection; OSError if one cannot be read."""
        paths = [Path(f) for f in files]
        try:
            return self._lookup_all(paths)
        except (sqlite3.DatabaseError, _OtherSchema) as err:
            if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise DiskFull(self.path) from err
            if not _unusable(err):
                raise  # e.g. "database is locked" past the timeout: a real problem, not a damaged cache
            self._replace(err)
            return self._lookup_all(paths)

    def _lookup_all(self, paths: list[Path]) -> list[str]:
        with closing(self._open()) as db:
            return [_sha256(db, path) for path in paths]

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA synchronous = OFF")  # safe against a killed process; a crashed OS may damage it
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                with db:
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise _OtherSchema(f"schema version {version}, expected {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _replace(self, err: Exception) -> None:
        """Start a new, empty index in place of an unusable one (unless another process already did)."""
        with FileLock(self.path.with_name(f"{self.path.name}.lock")):
            try:
                self._open().close()
                return  # replaced meanwhile by another process
            except (sqlite3.DatabaseError, _OtherSchema) as again:
                if not _unusable(again):
                    raise
            log.warning("%s: not a usable media hash index (%s); starting a new one", self.path, err)
            for stale in (self.path, self.path.with_name(f"{self.path.name}-journal")):
                stale.unlink(missing_ok=True)


def _unusable(err: Exception) -> bool:
    return isinstance(err, _OtherSchema) or getattr(err, "sqlite_errorcode", None) in _UNUSABLE_CODES


def file_stamp(stat: os.stat_result) -> Stamp:
    """What a remembered digest is keyed on: a file whose stamp is the same is taken to hold the same bytes."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def settled_sha256(path: str | Path, stamp: Stamp) -> tuple[str, bool]:
    """The file's SHA-256, and whether it may be remembered under ``stamp``: its mtime is ``RACY_SECONDS`` old
    and it was not written to while it was read (the racy-stat rule, for this index and the bundle's checks)."""
    settled = time.time_ns() - stamp[1] >= RACY_SECONDS * 1e9  # before the read: a write during it is newer
    digest = file_sha256(path)
    return digest, settled and file_stamp(os.stat(path)) == stamp


def _sha256(db: sqlite3.Connection, path: Path) -> str:
    key = os.path.abspath(path)
    stamp = file_stamp(os.stat(path))
    row = db.execute("SELECT size, mtime_ns, inode, sha256 FROM media WHERE path = ?", (key,)).fetchone()
    if row is not None and tuple(row[:3]) == stamp:
        return row[3]
    digest, settled = settled_sha256(path, stamp)
    if settled:
        with db:
            db.execute("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?)", (key, *stamp, digest))
    return digest
