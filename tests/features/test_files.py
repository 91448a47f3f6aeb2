"""The one atomic-write helper: a write that fails leaves the old file and no temporary name behind; one that
succeeds replaces the file in one step. And the one file hash."""

import hashlib
import subprocess

import pytest

from features.files import atomic_open, atomic_path, atomic_write_text, file_sha256
from tests.support.data import REPO


class Boom(Exception):
    pass


def test_a_failed_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old\n")
    with pytest.raises(Boom):
        with atomic_open(target, "w") as f:
            f.write("half of the new")
            f.flush()
            raise Boom
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
            raise Boom
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_a_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "store.h5") as tmp:
            (tmp / "inner").mkdir(parents=True)  # a folder, too, is removed whole
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_a_write_replaces_the_file_with_the_bytes_a_plain_write_makes(tmp_path):
    text = "a,b\r\n1,ü\n"
    (tmp_path / "plain.txt").write_text(text)
    atomic_write_text(tmp_path / "atomic.txt", "first")
    atomic_write_text(tmp_path / "atomic.txt", text)
    assert (tmp_path / "atomic.txt").read_bytes() == (tmp_path / "plain.txt").read_bytes()
    with atomic_path(tmp_path / "link") as tmp:
        tmp.symlink_to("atomic.txt")
    link = tmp_path / "link"
    assert link.is_symlink() and link.read_bytes() == (tmp_path / "plain.txt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.txt", "link", "plain.txt"]


def test_temporary_names_sit_beside_the_target_and_are_ignored_by_git_and_dvc(tmp_path):
    with atomic_path(tmp_path / "features.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("features.h5.tmp-")
        name = tmp.name
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "features.h5") as other:
        assert other.name != name  # two writers of one file never share a temporary name
        other.write_bytes(b"y")
    for ignore_file in (".gitignore", ".dvcignore"):
        assert "*.tmp-*" in (REPO / ignore_file).read_text().splitlines()
    checked = subprocess.run(["git", "check-ignore", "-q", f"build/demo/{name}"], cwd=REPO)
    assert checked.returncode == 0


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "media.bin").write_bytes(data)
    assert file_sha256(tmp_path / "media.bin") == hashlib.sha256(data).hexdigest()
