"""The release registry of each dataset: where its pipeline writes, its champion, its kept releases and its
history, and the two ways the champion changes, promotion (by the retrain flow) and rollback.

State per dataset, under ``models/d/`` (not tracked by git or DVC: it is what the deployment decided)::

    champion            symlink to releases/<id>: the promoted bundle, swapped atomically
    releases/<id>/      a copy of build/d/model plus champion.json (the record that promoted it); <id> is the UTC
                        time of the promotion. The champion and the last params ``serve.keep_releases`` (default 5)
                        releases before it are kept; promotion prunes the oldest others
    history.jsonl       one JSON line per retrain that trained (time, data hash, metrics of both, decision) and
                        per rollback; a record whose release was pruned has ``null`` for it and ``<key>_pruned``
                        (when), so the history never names a release that is gone
    retrain.lock        held while a retrain or a rollback of d runs; a second one fails at once instead of overlapping

The champion changes only by one rename, so a retrain that fails anywhere leaves it as it was. ``rollback`` points
it back at a kept release by the same rename.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from filelock import FileLock, Timeout

from features.errors import PipelineError
from features.files import TEMP_MARK, atomic_path, atomic_write_text, temp_path
from features.types import check_id
from flows.params import ServeConfig
from selfmm.bundle import BundleError, verify_bundle
from selfmm.report import strict_json


class Decision(StrEnum):
    """What a retrain or a rollback decided; the values are what history.jsonl records."""

    PROMOTED = "promoted"  # the challenger became the champion
    KEPT = "kept"  # the champion stays: the challenger is not better
    FAILED = "failed"  # the retrain could not finish (the champion is unchanged)
    NOTHING_TO_DO = "nothing to do"  # the annotations are those of the last retrain (not recorded)
    ROLLED_BACK = "rolled back"  # `selfmm rollback` pointed the champion at an earlier release


class RetrainError(PipelineError):
    """A retrain or rollback that could not run or could not finish (the champion is unchanged)."""


@dataclass(frozen=True)
class DatasetPaths:
    """Where one dataset's pipeline writes (the DVC stages' outputs) and where its champion lives."""

    dataset: str

    def __post_init__(self) -> None:
        check_id(self.dataset, "dataset name")

    @property
    def data(self) -> Path:
        return Path("data") / self.dataset

    @property
    def features(self) -> Path:
        return Path("build") / self.dataset / "features.h5"

    @property
    def model(self) -> Path:
        return Path("build") / self.dataset / "model"

    @property
    def metrics(self) -> Path:
        return Path("build") / self.dataset / "report" / "metrics.json"

    @property
    def home(self) -> Path:
        return Path("models") / self.dataset

    @property
    def champion(self) -> Path:
        return self.home / "champion"

    @property
    def history(self) -> Path:
        return self.home / "history.jsonl"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    @property
    def lock(self) -> Path:
        return self.home / "retrain.lock"


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_trained_hash(path: Path) -> str | None:
    """The data hash of the last retrain that got to a decision (a failed one does not count)."""
    decided = [r for r in read_history(path) if r["decision"] in (Decision.PROMOTED, Decision.KEPT)]
    return decided[-1]["data_hash"] if decided else None


def append_history(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(strict_json(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """An exclusive lock on ``lock_file`` for the block, or RetrainError at once if another holder has it (another
    process, or another ``exclusive`` in this one). The lock file names its holder while it is held.
    (Deployment runs queue before they get here: retrain deployments have a concurrency limit of 1.)"""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, blocking=False, on_acquired=_write_holder)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = lock_file.read_text().strip()
        except OSError:  # released since
            holder = ""
        raise RetrainError(f"another {what} is running ({holder or 'holder unknown'}); two never overlap") from None
    try:
        yield
    finally:
        lock.release()


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)


def promote(paths: DatasetPaths, record: dict, keep: int = ServeConfig.keep_releases) -> Path:
    """Copy the challenger to ``releases/<id>`` with its record, point ``champion`` at it in one rename, then
    prune the releases beyond the newest ``keep`` besides it (never the one it replaced: ``record`` names it).
    The copy is checked against the bundle's manifest before it is named: a damaged one (BundleError, naming the
    file) is never promoted. ``champion.json`` lies outside the bundle's files, so it does not disturb them."""
    release = paths.releases / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    with atomic_path(release) as staging:
        shutil.copytree(paths.model, staging)
        verify_bundle(staging)
        (staging / "champion.json").write_text(json.dumps(strict_json(record), indent=2, sort_keys=True))
    previous = current_release(paths)
    _point_champion(paths, release.name)
    prune_releases(paths, keep, spare={previous} if previous else set())
    return release


def _point_champion(paths: DatasetPaths, release: str) -> None:
    """``champion`` -> ``releases/<release>``, in one rename: a reader sees the old champion or the new one."""
    with atomic_path(paths.champion) as link:
        link.symlink_to(Path("releases") / release)


def current_release(paths: DatasetPaths) -> str | None:
    """The id of the release ``champion`` points to, or None without a champion."""
    if not paths.champion.is_symlink():
        return None
    target = paths.champion.resolve()
    return target.name if target.parent == paths.releases.resolve() and target.is_dir() else None


def list_releases(paths: DatasetPaths) -> list[str]:
    """The ids of the releases on disk, oldest first (an id is the UTC time of its promotion)."""
    if not paths.releases.is_dir():
        return []
    return sorted(p.name for p in paths.releases.iterdir() if p.is_dir() and TEMP_MARK not in p.name)


def prune_releases(paths: DatasetPaths, keep: int, spare: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Delete the oldest releases beyond ``keep`` besides the champion: never the champion, a release another
    link in ``models/<d>/`` points to, or one of ``spare`` (these two count among the ``keep``). The history is
    rewritten first so that no record names a pruned release, then each is renamed away and deleted, so a crash
    leaves no half release under its id. Returns the pruned ids."""
    pointed = {
        link.resolve().name
        for link in paths.home.iterdir()
        if link.is_symlink() and link.resolve().parent == paths.releases.resolve()
    }
    protected = pointed | set(spare)
    champion = current_release(paths)
    others = [r for r in list_releases(paths) if r != champion]
    kept = {r for r in others if r in protected}
    for release in reversed(others):
        if len(kept) >= keep:
            break
        kept.add(release)
    pruned = [r for r in others if r not in kept]
    if not pruned:
        return []
    _unname_in_history(paths.history, set(pruned))
    for release in pruned:
        gone = temp_path(paths.releases / release)
        os.replace(paths.releases / release, gone)
        shutil.rmtree(gone)
    return pruned


def _release_id(value: object) -> str | None:
    """The release id a history value names (``releases/<id>`` or ``models/<d>/releases/<id>``), else None."""
    if isinstance(value, str) and Path(value).parent.name == "releases":
        return Path(value).name
    return None


def _unname(record: dict, pruned: set[str], when: str) -> bool:
    """Replace, at any depth of ``record``, each value naming a pruned release by null and ``<key>_pruned``."""
    changed = False
    for key, value in list(record.items()):
        if isinstance(value, dict):
            changed |= _unname(value, pruned, when)
        elif _release_id(value) in pruned:
            record[key], record[f"{key}_pruned"] = None, when
            changed = True
    return changed


def _unname_in_history(path: Path, pruned: set[str]) -> None:
    """Rewrite history.jsonl atomically with the records naming a pruned release rewritten; the other lines keep
    their bytes."""
    if not path.is_file():
        return
    when = utc_now()
    lines = path.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        record = json.loads(line) if line.strip() else None
        if record is not None and _unname(record, pruned, when):
            line = json.dumps(strict_json(record), sort_keys=True) + "\n"
        out.append(line)
    if out != lines:
        atomic_write_text(path, "".join(out))


def champion_lineage(records: list[dict]) -> list[str | None]:
    """The champions in the order they replaced each other, the current last, from the history: a promotion
    appends its release; a rollback to an earlier one of the lineage cuts it back to that one (so repeated
    rollbacks step further back, like undo), a rollback to any other release appends it. None: pruned."""
    lineage: list[str | None] = []
    for record in records:
        if record.get("decision") == Decision.PROMOTED and "release" in record:
            lineage.append(_release_id(record["release"]))
        elif record.get("decision") == Decision.ROLLED_BACK:
            target = _release_id(record.get("release"))
            if target is None:  # pruned since: what came before it is no longer known
                lineage = [None]
            elif target in lineage:
                del lineage[len(lineage) - lineage[::-1].index(target) :]
            else:
                lineage.append(target)
    return lineage


def rollback(dataset: str, to: str | None = None) -> dict:
    """Point ``dataset``'s champion back at a kept release, in one rename, and record it in the history: the
    release ``to`` (its id, or ``releases/<id>``), else the one that was champion before the current one. Under
    the dataset's retrain lock; RetrainError, with nothing changed, when there is no such release or its files fail
    its manifest. Returns the history record."""
    paths = DatasetPaths(dataset)
    no_champion = RetrainError(f"{dataset}: no champion at {paths.champion}, nothing to roll back")
    if current_release(paths) is None:  # before the lock, which would make models/<dataset>/
        raise no_champion
    with exclusive(paths.lock, f"retrain or rollback of {dataset}"):
        current = current_release(paths)
        if current is None:
            raise no_champion
        kept = list_releases(paths)
        if to is not None:
            target = Path(to).name
            if target not in kept or Path(to).parent.name not in ("", "releases"):
                raise RetrainError(f"{dataset}: no release {to!r} in {paths.releases}; kept: {', '.join(kept)}")
            reason = "the release asked for (--to)"
        else:
            lineage = champion_lineage(read_history(paths.history))
            if len(lineage) < 2 or lineage[-1] != current:
                raise RetrainError(
                    f"{dataset}: the history names no champion before {current}, nothing to roll "
                    f"back to; choose a release with --to ({', '.join(kept)})"
                )
            target = lineage[-2]
            if target not in kept:
                raise RetrainError(
                    f"{dataset}: the champion before {current} was pruned (params serve."
                    f"keep_releases); choose a kept release with --to ({', '.join(kept)})"
                )
            reason = "back to the champion before the current one"
        if target == current:
            raise RetrainError(f"{dataset}: release {target} is already the champion, nothing to roll back")
        try:
            verify_bundle(paths.releases / target)
        except BundleError as err:
            raise RetrainError(f"{dataset}: release {target} cannot be champion again: {err}") from None
        _point_champion(paths, target)
        record = {
            "time": utc_now(),
            "dataset": dataset,
            "decision": Decision.ROLLED_BACK,
            "release": f"releases/{target}",
            "previous": f"releases/{current}",
            "reason": reason,
        }
        append_history(paths.history, record)
        return record


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
