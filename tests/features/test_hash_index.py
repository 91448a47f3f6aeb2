"""The stat index of media SHA-256s: a file whose stat changed is hashed again, one whose stat did not is not
(seen from outside: bytes changed behind a restored stat keep the old hash), a damaged index is replaced, and
concurrent writers lose nothing."""

import hashlib
import logging
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from features.hash_index import MediaHashes

OLD_NS = 1_600_000_000 * 10**9  # an mtime long past, so the hash is recorded (not racy)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    """Write ``data`` in place (same inode) and set the mtime."""
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def index(tmp_path) -> MediaHashes:
    return MediaHashes(tmp_path / "cache" / "media-sha256.sqlite")


def test_an_unchanged_stat_returns_the_stored_hash_without_reading_the_file(tmp_path, index):
    media = write(tmp_path / "a.mp4", b"original bytes")
    assert index.sha256(media) == sha(b"original bytes")
    write(media, b"OTHER bytes...")  # same size, same mtime, same inode: the index cannot tell
    assert index.sha256(media) == sha(b"original bytes")
    assert MediaHashes(index.path).sha256(media) == sha(b"original bytes")  # persisted, not held in memory


def test_a_new_mtime_or_a_new_size_is_hashed_again(tmp_path, index):
    media = write(tmp_path / "a.mp4", b"first")
    assert index.sha256(media) == sha(b"first")
    write(media, b"other", OLD_NS + 1)  # same size, mtime one nanosecond later
    assert index.sha256(media) == sha(b"other")
    write(media, b"longer bytes", OLD_NS + 1)  # same mtime, new size
    assert index.sha256(media) == sha(b"longer bytes")


def test_a_file_replaced_by_a_rename_is_hashed_again(tmp_path, index):
    media = write(tmp_path / "a.mp4", b"first")
    assert index.sha256(media) == sha(b"first")
    os.replace(write(tmp_path / "new.mp4", b"other"), media)  # same size and mtime, another inode
    assert index.sha256(media) == sha(b"other")


def test_a_file_modified_within_the_racy_window_is_never_trusted(tmp_path, index):
    media = tmp_path / "a.mp4"
    media.write_bytes(b"first")  # mtime: now
    recent = media.stat().st_mtime_ns
    assert index.sha256(media) == sha(b"first")
    write(media, b"other", recent)  # same stat, as a rewrite within one mtime tick leaves it
    assert index.sha256(media) == sha(b"other")


def test_many_files_in_one_call_keep_their_order_and_a_missing_one_is_an_os_error(tmp_path, index):
    files = [write(tmp_path / f"{i}.mp4", f"clip {i}".encode()) for i in range(5)]
    assert index.sha256_all(files) == [sha(f"clip {i}".encode()) for i in range(5)]
    with pytest.raises(FileNotFoundError):
        index.sha256_all([files[0], tmp_path / "missing.mp4"])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema"])
def test_a_damaged_index_is_replaced_with_a_warning_naming_it(tmp_path, index, caplog, damage):
    media = write(tmp_path / "a.mp4", b"first")
    assert index.sha256(media) == sha(b"first")
    if damage == "garbage":
        index.path.write_bytes(b"not a database at all" * 100)
    elif damage == "truncated":
        index.path.write_bytes(index.path.read_bytes()[:50])
    else:
        with sqlite3.connect(index.path) as db:
            db.execute("PRAGMA user_version = 99")
    write(media, b"other")  # bytes changed, stat restored: only a rebuilt index hashes them again
    with caplog.at_level(logging.WARNING, logger="features.hash_index"):
        assert index.sha256(media) == sha(b"other")
    assert str(index.path) in caplog.text and "not a usable media hash index" in caplog.text
    write(media, b"third")
    assert index.sha256(media) == sha(b"other")  # the new index is in use


def _hash_all(index_path: str, files: list[str]) -> list[str]:
    return MediaHashes(index_path).sha256_all(files)


def test_concurrent_processes_record_every_hash(tmp_path, index):
    groups = [[write(tmp_path / f"{g}-{i}.mp4", f"{g} {i}".encode()) for i in range(30)] for g in range(3)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_hash_all, [(str(index.path), [str(f) for f in group]) for group in groups])
    assert results == [[sha(f"{g} {i}".encode()) for i in range(30)] for g in range(3)]
    for group in groups:
        for media in group:
            write(media, b"x" * media.stat().st_size)  # bytes changed behind a restored stat
    assert index.sha256_all(f for group in groups for f in group) == [r for result in results for r in result]
