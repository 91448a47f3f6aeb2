"""params.yaml: the one file every result depends on. Sections: extract, run, demo, train (and train_<name>), serve.

Every section is checked in full when the file is read, before any work starts: an unknown section or key, or a
value of the wrong type, is a ConfigError naming ``section.key`` and what is allowed. Each default lives in one
place: the dataclasses here (run, demo, serve), features/config.py (extract) and selfmm/config.py (train).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from features.config import ExtractConfig, check_fields, from_section
from features.errors import ConfigError
from features.types import DatasetError, check_id
from selfmm.config import TrainConfig

DEFAULT_PARAMS = Path("params.yaml")
SECTIONS = ("extract", "run", "demo", "train", "serve")  # and train_<name>: more training sections


class TaskRunnerKind(StrEnum):
    THREADS = "threads"  # this process, ``workers`` threads
    PROCESSES = "processes"  # ``workers`` threads, each handing its source to one of ``workers`` local processes
    DASK = "dask"  # prefect-dask: the scheduler at ``dask_address``, or a local cluster of ``workers`` processes


@dataclass(frozen=True)
class RunConfig:
    """``run``: how extraction runs (no effect on the features)."""

    workers: int = 2  # source videos extracted in parallel
    task_runner: TaskRunnerKind = TaskRunnerKind.THREADS
    dask_address: str | None = None  # tcp://host:8786: an existing Dask scheduler
    cache_dir: str = ".cache/shards"  # content-addressed shards
    max_failure_fraction: float = 0.2  # the extract stage fails when more clips than this fraction fail

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if not 0 <= self.max_failure_fraction <= 1:
            raise ConfigError(f"max_failure_fraction must be between 0 and 1, not {self.max_failure_fraction}")

    def updated(self, values: dict[str, Any]) -> RunConfig:
        """A copy with ``values`` (command-line options, checked like params) replacing settings."""
        return dataclasses.replace(self, **check_fields(RunConfig, values, "run"))


@dataclass(frozen=True)
class DemoConfig:
    """``demo``: the built-in demo corpus (``selfmm demo-corpus``, through dvc.yaml)."""

    clips: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ConfigError("clips must be at least 1")


@dataclass(frozen=True)
class ServedDatasetConfig:
    """One entry of ``serve.datasets``: data/<name>/ -> build/<name>/, through dvc.yaml's stages
    extract@<name>, train@<name> and evaluate@<name>, which DVC generates from this list."""

    train_section: str  # the params section train@<name> and train/<name> train with (dvc.yaml reads it too)
    retrain_cron: str | None = None  # retrain/<name>'s schedule; None: on demand only


@dataclass(frozen=True)
class ModelServiceConfig:
    """``serve.model``: ``selfmm serve-model``, the HTTP service that answers predictions with the champion."""

    max_upload_mb: float = 200.0  # an upload larger than this is refused (413) as soon as it passes the limit
    max_concurrent: int | None = None  # predictions running at once; None: the number of CPU cores
    max_waiting: int = 16  # requests queued behind those; more get 503 with Retry-After

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ConfigError(f"max_upload_mb must be positive, not {self.max_upload_mb}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(
                f"max_concurrent must be at least 1 (or null: the number of cores), not {self.max_concurrent}"
            )
        if self.max_waiting < 0:
            raise ConfigError(f"max_waiting must be 0 or more, not {self.max_waiting}")


@dataclass(frozen=True)
class ServeConfig:
    """``serve``: ``selfmm serve``'s Prefect server and the deployments ``<flow>/<dataset>``; ``serve.model``:
    the model service."""

    port: int = 4200  # of the server on 127.0.0.1
    timezone: str = "UTC"  # of the cron schedules
    keep_releases: int = 5  # releases kept besides the champion when a retrain promotes (rollback targets)
    datasets: dict[str, ServedDatasetConfig] = field(default_factory=dict)
    model: ModelServiceConfig = field(default_factory=ModelServiceConfig)

    def __post_init__(self) -> None:
        if self.keep_releases < 1:
            raise ConfigError("keep_releases must be at least 1 (the release a rollback returns to)")
        for name in self.datasets:
            try:
                check_id(str(name), "dataset name")
            except DatasetError as err:
                raise ConfigError(f"datasets.{name}: {err}") from None


@dataclass(frozen=True)
class Params:
    """A checked params file. ``extract`` and the training sections stay mappings, since commands merge their
    overrides into them before building the config (checked again then)."""

    extract: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)  # train, train_mosi, ...

    def extract_config(self, overrides: dict | None = None) -> ExtractConfig:
        return ExtractConfig.from_dict(deep_update(self.extract, overrides))

    def train_config(self, section: str = "train", overrides: dict | None = None) -> TrainConfig:
        """The training config of a section (``train`` for the demo, ``train_mosi``, ...) plus overrides."""
        return TrainConfig.from_dict(deep_update(self.train.get(section) or {}, overrides), section)


def load_params(path: str | Path | None = None) -> Params:
    """The params file, checked; a missing default file means all defaults, a missing named file is an error."""
    path = Path(path) if path else DEFAULT_PARAMS
    if not path.is_file():
        if path == DEFAULT_PARAMS:
            return Params()
        raise ConfigError(f"{path}: no such params file")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return parse_params(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_params(data: dict[str, Any]) -> Params:
    """Every section of a params mapping checked; ConfigError naming the first bad ``section.key``."""
    unknown = sorted(str(k) for k in data if k not in SECTIONS and not str(k).startswith("train_"))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}, train_<name>")
    extract = dict(data.get("extract") or {})
    ExtractConfig.from_dict(extract)
    train = {str(name): section or {} for name, section in data.items() if str(name).startswith("train")}
    for name, section in train.items():
        TrainConfig.from_dict(section, name)
    return Params(
        extract=extract,
        run=from_section(RunConfig, data.get("run"), "run"),
        demo=from_section(DemoConfig, data.get("demo"), "demo"),
        serve=from_section(ServeConfig, data.get("serve"), "serve"),
        train=train,
    )


def deep_update(base: dict, overrides: dict | None) -> dict:
    """A copy of ``base`` with ``overrides`` merged in, nested dicts merged key by key."""
    out = dict(base)
    for key, value in (overrides or {}).items():
        out[key] = deep_update(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["face.fps=5", "audio.feature_set=ComParE_2016"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def extract_config(params: Params, overrides: dict | None = None) -> ExtractConfig:
    return params.extract_config(overrides)
