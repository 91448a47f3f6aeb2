"""The ``retrain`` flow: notice new or changed annotations, rebuild the dataset's model through DVC, and promote
the new model only if it beats the current champion on the validation split.

One run, for dataset ``d`` (data in ``data/d/``):

1. Hash the annotations: every clip's ids, text, labels, split and segment, and the SHA-256 of its media. If the
   hash is the one the last retrain trained on, stop: nothing to do.
2. Extract through the shard cache (the ``feature-extract`` flow, on the configured task runner): only new or
   changed clips cost work.
3. ``dvc repro --single-item <stages>``: DVC re-runs what changed (its extract stage finds every shard cached),
   trains and evaluates, and ``dvc.lock`` records exactly what the challenger was built from.
4. Score challenger and champion on the current validation split (MAE of the fused prediction, lower is better)
   and promote the challenger only if it is strictly better.

State per dataset, under ``models/d/`` (not tracked by git or DVC: it is what the deployment decided)::

    champion            symlink to releases/<id>: the promoted bundle, swapped atomically
    releases/<id>/      a copy of build/d/model plus champion.json (the record that promoted it)
    history.jsonl       one JSON line per retrain that trained: time, data hash, metrics of both, decision
    retrain.lock        held while a retrain of d runs; a second one fails at once instead of overlapping

The champion changes only in the last step, by one rename, so a retrain that fails anywhere leaves it as it was.
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

from features.errors import PipelineError
from features.files import atomic_path, file_sha256
from features.types import DatasetSpec, check_id
from flows.extract import feature_extract, make_task_runner, open_dataset
from flows.params import load_params
from selfmm.bundle import BundleError
from selfmm.predict import evaluate
from selfmm.report import strict_json

METRIC = "MAE"  # of the fused prediction on the validation split: lower is better


class Decision(StrEnum):
    """What a retrain decided; the values are what history.jsonl records."""

    PROMOTED = "promoted"  # the challenger became the champion
    KEPT = "kept"  # the champion stays: the challenger is not better
    FAILED = "failed"  # the retrain could not finish (the champion is unchanged)
    NOTHING_TO_DO = "nothing to do"  # the annotations are those of the last retrain (not recorded)


PROMOTED, KEPT, FAILED, NOTHING_TO_DO = Decision  # the names callers and tests import


class RetrainError(PipelineError):
    """A retrain that could not run or could not finish (the champion is unchanged)."""


@dataclass(frozen=True)
class DatasetPaths:
    """Where one dataset's pipeline writes (the DVC stages' outputs) and where its champion lives."""

    dataset: str

    def __post_init__(self) -> None:
        check_id(self.dataset, "dataset name")

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


@flow(name="retrain", flow_run_name="retrain-{dataset}")
def retrain(dataset: str, stages: list[str], force: bool = False) -> dict:
    """Retrain ``dataset`` through its DVC ``stages`` if its annotations changed (or ``force``); promote the new
    model only if it is better on validation. Returns the history record (or the "nothing to do" answer)."""
    logger = get_run_logger()
    paths = DatasetPaths(dataset)
    spec = open_dataset(dataset)  # fails fast, naming the expected layout and where the data comes from
    with exclusive(paths.home / "retrain.lock", f"retrain of {dataset}"):
        data_hash = annotations_hash(spec)
        if not force and data_hash == last_trained_hash(paths.history):
            logger.info("%s: nothing to do, the annotations (%s) are those of the last retrain", dataset,
                        data_hash[:12])
            return {"dataset": dataset, "decision": Decision.NOTHING_TO_DO, "data_hash": data_hash}
        record = {"time": _now(), "dataset": dataset, "data_hash": data_hash, "clips": len(spec.clips)}
        try:
            record.update(challenge(paths, stages))
            if record["decision"] == Decision.PROMOTED:
                record["release"] = str(promote(paths, record))
        except Exception as err:
            record.update(decision=Decision.FAILED, error=f"{type(err).__name__}: {err}")
            append_history(paths.history, record)
            raise
        append_history(paths.history, record)
        logger.info("%s: %s (%s)", dataset, record["decision"], record["reason"])
        return record


def challenge(paths: DatasetPaths, stages: list[str]) -> dict:
    """Extract, rebuild through DVC, score challenger and champion, decide: the body of the history record."""
    extract = feature_extract.with_options(task_runner=make_task_runner(load_params().run))
    summary = extract(dataset=paths.dataset, out=str(paths.features))
    dvc_repro(stages)
    challenger = {"valid": valid_metrics(paths.model, paths.features),
                  "test": json.loads(paths.metrics.read_text())["mean"],
                  "model_md5": dvc_md5(paths.model)}
    champion = champion_metrics(paths)
    body = {"extraction": {k: summary[k] for k in ("extracted", "cached", "failed")},
            "metric": f"valid {METRIC}, lower is better", "challenger": challenger, "champion": champion}
    new = challenger["valid"][METRIC]
    if champion is None:
        return {**body, "decision": Decision.PROMOTED, "reason": "no champion yet"}
    old = champion["valid"][METRIC]
    old = math.nan if old is None else old  # stored records hold NaN as null
    if better(new, old):
        return {**body, "decision": Decision.PROMOTED, "reason": f"valid {METRIC} {new:.4f} < champion's {old:.4f}"}
    return {**body, "decision": Decision.KEPT,
            "reason": f"valid {METRIC} {new:.4f} is not below the champion's {old:.4f}"}


def better(new: float, old: float) -> bool:
    """Strictly lower; a score that is not a number (a diverged model) never wins, and always loses."""
    return math.isfinite(new) and (not math.isfinite(old) or new < old)


def annotations_hash(spec: DatasetSpec) -> str:
    """SHA-256 over every clip's annotation (ids, text, labels, split, segment) with its media's SHA-256, and the
    rows the label file rejected: a new clip, a changed label or a re-encoded video each change it."""
    digest = hashlib.sha256()
    for source in spec.sources:
        digest.update(file_sha256(source.media).encode())
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
        for line in proc.stdout:
            tail.append(line.rstrip())
            logger.info("dvc: %s", line.rstrip())
    if proc.returncode:
        raise RetrainError(f"dvc repro --single-item {' '.join(stages)} failed (exit {proc.returncode}):\n"
                           + "\n".join(tail))


def dvc_md5(out: Path) -> str | None:
    """The hash the DVC lock file records for an output: the key of that exact model in the DVC cache."""
    with Repo(".") as repo:
        return next((o.hash_info.value for stage in repo.index.stages for o in stage.outs
                     if Path(o.fs_path) == out.resolve()), None)


def valid_metrics(model: Path, features: Path) -> dict[str, float]:
    return evaluate(model, features, split="valid")["mean"]


def champion_metrics(paths: DatasetPaths) -> dict | None:
    """The champion's validation metrics on the current store, or (when the features were made with another
    config since, so it cannot read them) those recorded when it was promoted. None: no champion yet."""
    info_file = paths.champion / "champion.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    base = {"release": str(paths.champion.resolve().relative_to(paths.home.resolve())),
            "promoted": info["time"], "data_hash": info["data_hash"], "test": info["challenger"]["test"]}
    try:
        return {**base, "valid": valid_metrics(paths.champion, paths.features), "basis": "current valid split"}
    except BundleError as err:
        get_run_logger().warning("champion cannot read the current features (%s); comparing with the validation "
                                 "metrics recorded at its promotion", err)
        return {**base, "valid": info["challenger"]["valid"], "basis": "recorded at promotion"}


def promote(paths: DatasetPaths, record: dict) -> Path:
    """Copy the challenger to ``releases/<id>`` with its record, then point ``champion`` at it in one rename."""
    release = paths.home / "releases" / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    with atomic_path(release) as staging:
        shutil.copytree(paths.model, staging)
        (staging / "champion.json").write_text(json.dumps(strict_json(record), indent=2, sort_keys=True))
    previous = paths.champion.resolve() if paths.champion.is_symlink() else None
    with atomic_path(paths.champion) as link:
        link.symlink_to(release.relative_to(paths.home))
    if previous is not None and previous.is_dir():
        shutil.rmtree(previous)
    return release


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
