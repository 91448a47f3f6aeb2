"""The deployments ``selfmm serve`` registers, named ``<flow>/<dataset>``, with parameters and schedules taken from
params.yaml's ``serve`` section:

    feature-extract/<d>   data/<d>/ (or --param data=DIR) -> build/<d>/features.h5, through the shard cache (only
                          new clips cost work)
    train/<d>             build/<d>/features.h5 -> build/<d>/model
    retrain/<d>           changed annotations -> the DVC stages of <d> -> promote if better; on a cron schedule
    predict/<d>           the champion's predictions for data/<d>/incoming/ -> models/<d>/predictions.csv + artifact

Every dataset of ``serve.datasets`` gets all four, its data there or not: a run without it fails at once and says
where to put it. The task runner of feature-extract (params ``run``) is fixed when serving starts, like the rest of a
deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from pydantic import ValidationError

from features.errors import ConfigError
from flows.extract import feature_extract, make_task_runner
from flows.params import Params, RunConfig
from flows.predict import incoming_folder, predict_flow
from flows.releases import DatasetPaths
from flows.retrain import dvc_stages, retrain
from flows.train import train_flow


@dataclass(frozen=True)
class ServedDataset:
    """One entry of ``serve.datasets``: the dataset's name, its retrain schedule and the params section train/<d>
    trains with."""

    name: str
    retrain_schedule: CronSchedule | None
    train_section: str


def served_datasets(params: Params) -> list[ServedDataset]:
    """``serve.datasets`` (keys and types checked when params.yaml was read) with their cron expressions
    checked, before anything starts."""
    serve = params.serve
    if not serve.datasets:
        raise ConfigError("params.yaml: serve.datasets names no dataset to serve")
    return [
        ServedDataset(
            str(name),
            _schedule(entry.retrain_cron, serve.timezone, f"params.yaml serve.datasets.{name}"),
            entry.train_section,
        )
        for name, entry in serve.datasets.items()
    ]


def _schedule(cron: str | None, timezone: str, where: str) -> CronSchedule | None:
    if cron is None:
        return None
    try:
        return CronSchedule(cron=str(cron), timezone=timezone)
    except ValidationError as err:
        raise ConfigError(
            f"{where}.retrain_cron: {cron!r} (timezone {timezone}) is not a valid schedule "
            f"({err.errors()[0]['msg']}); cron has five fields, minute hour day-of-month month "
            f"day-of-week, e.g. '0 3 * * *' for 03:00 daily"
        ) from None


def build_deployments(datasets: list[ServedDataset], run: RunConfig) -> list[RunnerDeployment]:
    """Four deployments per dataset; ``run`` (params ``run``) picks feature-extract's task runner."""
    extract = feature_extract.with_options(task_runner=make_task_runner(run))
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    deployments = []
    for dataset in datasets:
        paths = DatasetPaths(dataset.name)
        deployments += [
            extract.to_deployment(
                dataset.name,
                parameters={"data": str(paths.data), "out": str(paths.features), "dataset": dataset.name},
                description=f"{paths.data}/ (or --param data=DIR) -> {paths.features}",
            ),
            train_flow.to_deployment(
                dataset.name,
                parameters={"features": str(paths.features), "out": str(paths.model), "section": dataset.train_section},
                description=f"{paths.features} -> {paths.model} (params {dataset.train_section})",
            ),
            retrain.to_deployment(
                dataset.name,
                parameters={"dataset": dataset.name},
                schedules=[dataset.retrain_schedule] if dataset.retrain_schedule else None,
                concurrency_limit=one_at_a_time,
                description=f"retrain {dataset.name} through DVC stages "
                f"{', '.join(dvc_stages(dataset.name))} when its annotations change",
            ),
            predict_flow.to_deployment(
                dataset.name,
                parameters={"dataset": dataset.name},
                description=f"{paths.champion} on {incoming_folder(dataset.name)} -> {paths.home / 'predictions.csv'}",
            ),
        ]
    return deployments
