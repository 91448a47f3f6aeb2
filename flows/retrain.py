"""The ``retrain`` flow: notice new or changed annotations, rebuild the dataset's model through DVC, and promote
the new model only if it beats the current champion on the validation split.

One run, for dataset ``d`` (data in ``data/d/``):

1. Hash the annotations: every clip's ids, text, labels, split and segment, and the SHA-256 of its media (from the
   shard cache's stat index: only new or changed media are read). If the hash is the one the last retrain
   trained on, stop: nothing to do.
2. Extract through the shard cache (the ``feature-extract`` flow, on the configured task runner): only new or
   changed clips cost work.
3. ``dvc repro --single-item <stages>``: DVC re-runs what changed (its extract stage finds every shard cached),
   trains and evaluates, and ``dvc.lock`` records exactly what the challenger was built from.
4. Score challenger and champion on the current validation split (MAE of the fused prediction, lower is better)
   and promote the challenger only if it is strictly better.

State per dataset, under ``models/d/`` (not tracked by git or DVC: it is what the deployment decided)::

    champion            symlink to releases/<id>: the promoted bundle, swapped atomically
    releases/<id>/      a copy of build/d/model plus champion.json (the record that promoted it); <id> is the UTC
                        time of the promotion. The champion and the last params ``serve.keep_releases`` (default 5)
                        releases before it are kept; promotion prunes the oldest others
    history.jsonl       one JSON line per retrain that trained (time, data hash, metrics of both, decision) and
                        per rollback; a record whose release was pruned has ``null`` for it and ``<key>_pruned``
                        (when), so the history never names a release that is gone
    retrain.lock        held while a retrain or a rollback of d runs; a second one fails at once instead of overlapping

The champion changes only in the last step, by one rename, so a retrain that fails anywhere leaves it as it was.
``rollback`` points it back at a kept release by the same rename.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from dvc.repo import Repo
from filelock import FileLock, Timeout
from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL

from features.cache import ShardCache
from features.errors import PipelineError
from features.files import TEMP_MARK, atomic_path, atomic_write_text, temp_path
from features.hash_index import MediaHashes
from features.types import DatasetSpec, check_id
from flows.artifacts import publish_decision
from flows.extract import feature_extract, make_task_runner, open_dataset
from flows.params import ServeConfig, load_params
from selfmm.bundle import BundleError, verify_bundle
from selfmm.predict import evaluate
from selfmm.report import strict_json

METRIC = "MAE"  # of the fused prediction on the validation split: lower is better


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


def dvc_stages(dataset: str) -> list[str]:
    """The stages dvc.yaml generates for a dataset of ``serve.datasets``: together they rebuild build/<d>/."""
    return [f"{stage}@{dataset}" for stage in ("extract", "train", "evaluate")]


@flow(name="retrain", flow_run_name="retrain-{dataset}")
def retrain(dataset: str, stages: list[str] | None = None, force: bool = False) -> dict:
    """Retrain ``dataset`` through its DVC ``stages`` (default: the dataset's extract, train and evaluate stages
    of dvc.yaml) if its annotations changed (or ``force``); promote the new model only if it is better on
    validation. Returns the history record (or the "nothing to do" answer)."""
    logger = get_run_logger()
    stages = stages or dvc_stages(dataset)
    paths = DatasetPaths(dataset)
    spec = open_dataset(dataset)  # fails fast, naming the expected layout and where the data comes from
    params = load_params()
    if dataset not in params.build and stages == dvc_stages(dataset):
        section = params.serve.datasets[dataset].train_section if dataset in params.serve.datasets else "train"
        raise RetrainError(
            f"retrain/{dataset} rebuilds through the DVC stages {', '.join(stages)}, which dvc.yaml has for "
            f"the datasets params.yaml `build` lists ({', '.join(params.build) or 'none'}): add "
            f"`{dataset}: {section}` there"
        )
    with exclusive(paths.lock, f"retrain of {dataset}"):
        data_hash = annotations_hash(spec, ShardCache(params.run.cache_dir).media_hashes)
        if not force and data_hash == last_trained_hash(paths.history):
            logger.info(
                "%s: nothing to do, the annotations (%s) are those of the last retrain", dataset, data_hash[:12]
            )
            return {"dataset": dataset, "decision": Decision.NOTHING_TO_DO, "data_hash": data_hash}
        record = {"time": _now(), "dataset": dataset, "data_hash": data_hash, "clips": len(spec.clips)}
        try:
            record.update(challenge(paths, stages))
            if record["decision"] == Decision.PROMOTED:
                record["release"] = str(promote(paths, record, params.serve.keep_releases))
        except Exception as err:
            record.update(decision=Decision.FAILED, error=f"{type(err).__name__}: {err}")
            append_history(paths.history, record)
            publish_decision(dataset, record)
            raise
        append_history(paths.history, record)
        publish_decision(dataset, record)
        logger.info("%s: %s (%s)", dataset, record["decision"], record["reason"])
        return record


def challenge(paths: DatasetPaths, stages: list[str]) -> dict:
    """Extract, rebuild through DVC, score challenger and champion, decide: the body of the history record."""
    extract = feature_extract.with_options(task_runner=make_task_runner(load_params().run))
    summary = extract(data=str(paths.data), out=str(paths.features), dataset=paths.dataset)
    dvc_repro(stages)
    challenger = {
        "valid": valid_metrics(paths.model, paths.features),
        "test": json.loads(paths.metrics.read_text())["mean"],
        "model_md5": dvc_md5(paths.model),
    }
    champion = champion_metrics(paths)
    body = {
        "extraction": {**summary["sources"], "failed_clips": summary["failed"]},
        "metric": f"valid {METRIC}, lower is better",
        "challenger": challenger,
        "champion": champion,
    }
    new = challenger["valid"][METRIC]
    if champion is None:
        return {**body, "decision": Decision.PROMOTED, "reason": "no champion yet"}
    old = champion["valid"][METRIC]
    old = math.nan if old is None else old  # stored records hold NaN as null
    if better(new, old):
        return {**body, "decision": Decision.PROMOTED, "reason": f"valid {METRIC} {new:.4f} < champion's {old:.4f}"}
    return {
        **body,
        "decision": Decision.KEPT,
        "reason": f"valid {METRIC} {new:.4f} is not below the champion's {old:.4f}",
    }


def better(new: float, old: float) -> bool:
    """Strictly lower; a score that is not a number (a diverged model) never wins, and always loses."""
    return math.isfinite(new) and (not math.isfinite(old) or new < old)


def annotations_hash(spec: DatasetSpec, media_hashes: MediaHashes) -> str:
    """SHA-256 over every clip's annotation (ids, text, labels, split, segment) with its media's SHA-256, and the
    rows the label file rejected: a new clip, a changed label or a re-encoded video each change it. The media
    hashes come through the shard cache's stat index, so only new or changed media are read."""
    digest = hashlib.sha256()
    media_sha256 = media_hashes.sha256_all(source.media for source in spec.sources)
    for source, sha in zip(spec.sources, media_sha256):
        digest.update(sha.encode())
        for clip in source.clips:
            digest.update(json.dumps(asdict(clip), sort_keys=True).encode())
    for failure in spec.rejected:
        digest.update(json.dumps(asdict(failure), sort_keys=True).encode())
    return digest.hexdigest()


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
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode(), 0)


def dvc_repro(stages: list[str]) -> None:
    """``dvc repro --single-item`` of the dataset's stages: each runs if its own inputs changed, and nothing
    upstream (such as the demo corpus generator) is touched. Stage commands report to this flow's Prefect API."""
    logger = get_run_logger()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", *stages]
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            tail.append(line.rstrip())
            logger.info("dvc: %s", line.rstrip())
    if proc.returncode:
        raise RetrainError(
            f"dvc repro --single-item {' '.join(stages)} failed (exit {proc.returncode}):\n" + "\n".join(tail)
        )


def dvc_md5(out: Path) -> str | None:
    """The hash the DVC lock file records for an output: the key of that exact model in the DVC cache."""
    with Repo(".") as repo:
        hashes = (o.hash_info for stage in repo.index.stages for o in stage.outs if Path(o.fs_path) == out.resolve())
        return next((h.value for h in hashes if h is not None), None)


def valid_metrics(model: Path, features: Path) -> dict[str, float]:
    return evaluate(model, features, split="valid")["mean"]


def champion_metrics(paths: DatasetPaths) -> dict | None:
    """The champion's validation metrics on the current store, or (when the features were made with another
    config since, so it cannot read them) those recorded when it was promoted. None: no champion yet."""
    info_file = paths.champion / "champion.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    base = {
        "release": str(paths.champion.resolve().relative_to(paths.home.resolve())),
        "promoted": info["time"],
        "data_hash": info["data_hash"],
        "test": info["challenger"]["test"],
    }
    try:
        return {**base, "valid": valid_metrics(paths.champion, paths.features), "basis": "current valid split"}
    except BundleError as err:
        get_run_logger().warning(
            "champion cannot read the current features (%s); comparing with the validation "
            "metrics recorded at its promotion",
            err,
        )
        return {**base, "valid": info["challenger"]["valid"], "basis": "recorded at promotion"}


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
    when = _now()
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
            "time": _now(),
            "dataset": dataset,
            "decision": Decision.ROLLED_BACK,
            "release": f"releases/{target}",
            "previous": f"releases/{current}",
            "reason": reason,
        }
        append_history(paths.history, record)
        return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
