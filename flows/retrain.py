"""The ``retrain`` flow: notice new or changed annotations, rebuild the dataset's model through DVC, and promote
the new model only if it beats the current champion on the validation split (the releases and the champion:
flows/releases.py).

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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import deque
from dataclasses import asdict
from pathlib import Path

from dvc.repo import Repo
from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL

from features.cache import ShardCache
from features.hash_index import MediaHashes
from features.types import DatasetSpec
from flows.artifacts import publish_decision
from flows.extract import feature_extract, make_task_runner, open_dataset
from flows.params import load_params
from flows.releases import (
    DatasetPaths,
    Decision,
    RetrainError,
    append_history,
    exclusive,
    last_trained_hash,
    promote,
    utc_now,
)
from selfmm.bundle import BundleError
from selfmm.predict import evaluate

METRIC = "MAE"  # of the fused prediction on the validation split: lower is better


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
        record = {"time": utc_now(), "dataset": dataset, "data_hash": data_hash, "clips": len(spec.clips)}
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
