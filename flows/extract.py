"""The ``feature-extract`` flow: one task per source video, then a single merge step that writes the store."""

from __future__ import annotations

import csv
import os
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from features.cache import ShardCache
from features.config import ExtractConfig
from features.datasets import load_dataset
from features.errors import DiskFull, PipelineError
from features.extract import SourceStatus, SourceSummary, build_store, extract_source
from features.files import atomic_open
from features.types import DatasetError, DatasetSpec, Failure, SourceVideo
from flows.artifacts import publish_extraction
from flows.params import RunConfig, TaskRunnerKind, load_params
from flows.settings import in_project

if TYPE_CHECKING:  # the flow imports it when processes are asked for
    from features.workers import ExtractionProcesses

LAYOUTS = (
    "a layout `selfmm extract` reads: MMSA's (label.csv and Raw/<video_id>/<clip_id>.mp4) or a CMU release's "
    "(the whole videos with OpinionLevelSentiment.csv, CMU_MOSEI_Labels.csd or CMU_MOSEI_Labels_csd_dump.csv)"
)
WHERE_DATA_COMES_FROM = "docs/datasets.md ('Real datasets') says where each dataset comes from"


class ExtractionFailed(PipelineError):
    """More clips failed than the configured fraction allows (the store and report are still written)."""


def worth_retrying(task: object, task_run: object, state: State) -> bool:
    """Retry what may pass the next time (a lost worker process, a passing error), never a full disk."""
    return not isinstance(state.data, DiskFull)


@task(
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,
    task_run_name="extract-{source.name}",
)
def extract_video(
    source: SourceVideo, config: ExtractConfig, cache_dir: str, processes: ExtractionProcesses | None = None
) -> SourceSummary:
    """Extract one source video into its shards, here or in a worker process (retried on unexpected errors and
    lost workers; bad media is a failure)."""
    if processes is not None:
        return processes.extract(source)
    return SourceSummary.of(extract_source(source, config, ShardCache(cache_dir)))


def dataset_folder(data: str) -> Path:
    """The folder ``data`` names: a path (a relative one taken from the project), or a dataset name under
    data/ (``demo``, ``mosei``). DatasetError, naming the folder, if it is missing or cannot be read."""
    given = Path(data)
    if len(given.parts) == 1 and not in_project(given).exists():
        given = Path("data") / data
    path = in_project(given)
    if not path.is_dir():
        problem = "not a folder" if path.exists() else "no such folder"
        raise DatasetError(
            f"{given}/: {problem} ({path.absolute()}). Put the dataset there in {LAYOUTS}; or point at the folder "
            f"it is in: `selfmm extract --dataset DIR`, `prefect deployment run feature-extract/<d> --param "
            f"data=DIR`. {WHERE_DATA_COMES_FROM}"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise DatasetError(f"{given}/: the folder cannot be read ({path.absolute()}): permission denied")
    return path


def open_dataset(data: str, name: str | None = None) -> DatasetSpec:
    """The dataset's clips (``name``: the dataset, which decides the label range; default the folder's name), or
    an error that says what the folder must hold and where to get the data."""
    folder = dataset_folder(data)
    try:
        return load_dataset(folder, name)
    except DatasetError as err:
        raise DatasetError(f"{err}; {WHERE_DATA_COMES_FROM}") from None


def make_task_runner(run: RunConfig) -> TaskRunner[Any]:  # Any: what flow.with_options() takes
    """The runner that spreads source videos, from params.yaml's ``run`` section: ``threads`` (this process,
    ``workers`` threads; ``processes`` too, whose threads hand the work to worker processes, see the flow's
    ``processes``) or ``dask``: the Dask scheduler at ``dask_address``, whose workers may be on other
    machines, or else a local cluster of ``workers`` single-threaded processes."""
    if run.task_runner in (TaskRunnerKind.THREADS, TaskRunnerKind.PROCESSES):
        return ThreadPoolTaskRunner(max_workers=run.workers)
    from prefect_dask.task_runners import DaskTaskRunner  # where prefect_dask's __init__ takes it from

    if run.dask_address:
        return DaskTaskRunner(address=run.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": run.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


def write_failure_report(path: Path, failures: list[Failure]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "clip", "stage", "error"])
        writer.writeheader()
        writer.writerows(asdict(x) for x in failures)


def failure_report_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.failures.csv")


# prefect's flow() wants TaskRunner[PrefectFuture[Any]], an invariant parameter no concrete runner matches
@flow(name="feature-extract", task_runner=cast(TaskRunner[Any], ThreadPoolTaskRunner(max_workers=2)))
def feature_extract(
    data: str,
    out: str,
    dataset: str | None = None,
    overrides: dict | None = None,
    params_file: str | None = None,
    cache_dir: str | None = None,
    max_failure_fraction: float | None = None,
    progress: bool = False,
    processes: int = 0,
) -> dict:
    """Raw media of the dataset in folder ``data`` (or data/<data>) -> HDF5 feature store ``out`` (+
    ``<out>.failures.csv``); ``dataset`` names it in the store (default: the folder's name). Relative paths are
    taken from the project. With ``processes`` the tasks hand their sources to that many worker processes
    (``features.workers``), else they extract them where they run. Nothing is written before the dataset is read."""
    logger = get_run_logger()
    params = load_params(in_project(params_file) if params_file else None)
    config = params.extract_config(overrides)
    cache_dir = str(in_project(cache_dir or params.run.cache_dir))
    limit = max_failure_fraction if max_failure_fraction is not None else params.run.max_failure_fraction
    spec = open_dataset(data, dataset)
    total = len(spec.clips) + len(spec.rejected)
    logger.info(
        "%s: %d clips in %d source files, %d rejected by the label file",
        spec.name,
        len(spec.clips),
        len(spec.sources),
        len(spec.rejected),
    )

    # Largest media first, so the longest video never starts last with the other workers idle; the store keeps
    # the label file's order (build_store below).
    by_size = sorted(spec.sources, key=_media_bytes, reverse=True)
    counts = {s: 0 for s in SourceStatus}
    with _worker_processes(processes, config, cache_dir) as workers:
        futures = [extract_video.submit(source, config, cache_dir, workers) for source in by_size]
        bar = _progress_bar(len(futures), progress)
        for future in as_completed(futures):
            summary = future.result(raise_on_failure=False)
            if isinstance(summary, DiskFull):
                raise summary  # every other source would fail the same way
            status = summary.status if isinstance(summary, SourceSummary) else SourceStatus.FAILED
            counts[status] += 1
            bar.update(1)
            bar.set_postfix({s.value: n for s, n in counts.items()})
        bar.close()
    logger.info(
        "sources: %d extracted, %d cached, %d failed",
        counts[SourceStatus.EXTRACTED],
        counts[SourceStatus.CACHED],
        counts[SourceStatus.FAILED],
    )

    out_path = in_project(out)
    failures = build_store(out_path, spec, config, ShardCache(cache_dir))
    report = failure_report_path(out_path)
    write_failure_report(report, failures)
    for failure in failures:
        logger.warning("failed %s/%s at %s: %s", failure.video, failure.clip, failure.stage, failure.error)
    fraction = len(failures) / total if total else 0.0
    sources = {s.value: n for s, n in counts.items()}
    summary = {
        "store": str(out_path),
        "clips": total - len(failures),
        "failed": len(failures),
        "failure_report": str(report),
        "sources": sources,  # source videos extracted, cached, failed (a failed clip need not fail its video)
    }
    logger.info("wrote %s: %d clips, %d failed (report: %s)", out_path, summary["clips"], len(failures), report)
    publish_extraction(spec.name, str(out_path), summary["clips"], sources, [asdict(x) for x in failures])
    if fraction > limit:
        raise ExtractionFailed(
            f"{len(failures)} of {total} clips failed ({fraction:.0%} > {limit:.0%} allowed); "
            f"the store holds the rest, see {report}"
        )
    return summary


def _worker_processes(processes: int, config: ExtractConfig, cache_dir: str) -> ExtractionProcesses | nullcontext[None]:
    """``processes`` extraction processes for the flow's tasks, or none (imported only when asked for)."""
    if not processes:
        return nullcontext()
    from features.workers import ExtractionProcesses

    return ExtractionProcesses(processes, config, cache_dir)


def _media_bytes(source: SourceVideo) -> int:
    """The source's file size, a proxy for its extraction time (0 when unreadable: the task reports why)."""
    try:
        return source.media.stat().st_size
    except OSError:
        return 0


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="sources", unit="video", disable=not enabled)
