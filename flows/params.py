"""params.yaml: the one file every result depends on. Sections: extract, run, demo, train (and train_<name>),
build, serve.

Every section is checked in full when the file is read, before any work starts: an unknown section or key, or a
value of the wrong type, is a ConfigError naming ``section.key`` and what is allowed. Each default lives in one
place: the dataclasses here (run, demo, serve), features/config.py (extract) and selfmm/config.py (train).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from features.config import ExtractConfig, check_fields, check_value, from_section
from features.errors import ConfigError
from features.types import DatasetError, check_id
from flows.settings import in_project
from selfmm.config import TrainConfig

DEFAULT_PARAMS = Path("params.yaml")
SECTIONS = ("extract", "run", "demo", "train", "build", "predict", "serve")  # and train_<name>: more training sections


class ParamsLoader(yaml.SafeLoader):
    """YAML read as DVC reads params.yaml (YAML 1.2 numbers): ``5e-5`` is a float, where YAML 1.1's rules, which
    PyYAML follows, make it a string (they want a dot)."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+.0123456789")
)


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
    """One entry of ``serve.datasets``: the deployments ``<flow>/<name>`` (data/<name>/ -> build/<name>/), registered
    whether or not the data is there yet (a run without it fails at once, saying where to put it)."""

    train_section: str  # the params section train/<name> trains with (and train@<name> when it is built)
    retrain_cron: str | None = None  # retrain/<name>'s schedule; None: on demand only


@dataclass(frozen=True)
class PredictConfig:
    """``predict``: scoring new media (``selfmm predict``, the predict/<d> deployment, the model service)."""

    min_segment_s: float = 2.0  # subtitle cues shorter than this are joined with their neighbours

    def __post_init__(self) -> None:
        if self.min_segment_s < 0:
            raise ConfigError(f"min_segment_s must be 0 or more seconds, not {self.min_segment_s}")


@dataclass(frozen=True)
class ModelServiceConfig:
    """``serve.model``: ``selfmm serve-model``, the HTTP service that answers predictions with the champion."""

    max_upload_mb: float = 200.0  # an upload larger than this is refused (413) as soon as it passes the limit
    max_concurrent: int | None = None  # predictions running at once; None: the number of CPU cores
    max_waiting: int = 16  # requests queued behind those; more get 503 with Retry-After
    max_video_s: float = 300.0  # a longer video is refused (413): the CLI or the predict/<d> deployment score it

    def __post_init__(self) -> None:
        if self.max_video_s <= 0:
            raise ConfigError(f"max_video_s must be positive, not {self.max_video_s}")
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
    idle_stop_s: float | None = 180.0  # the local server flow commands start stops this long after the last one
    # ended (commands run by `dvc repro` keep it until dvc ends, then it stops); None: it runs until
    # `selfmm server stop`
    timezone: str = "UTC"  # of the cron schedules
    keep_releases: int = 5  # releases kept besides the champion when a retrain promotes (rollback targets)
    datasets: dict[str, ServedDatasetConfig] = field(default_factory=dict)
    model: ModelServiceConfig = field(default_factory=ModelServiceConfig)

    def __post_init__(self) -> None:
        if self.keep_releases < 1:
            raise ConfigError("keep_releases must be at least 1 (the release a rollback returns to)")
        if self.idle_stop_s is not None and self.idle_stop_s < 0:
            raise ConfigError(f"idle_stop_s must be 0 or more seconds (or null: never), not {self.idle_stop_s}")


@dataclass(frozen=True)
class Params:
    """A checked params file. ``extract`` and the training sections stay mappings, since commands merge their
    overrides into them before building the config (checked again then)."""

    extract: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)  # train, train_mosi, ...
    build: dict[str, str] = field(default_factory=lambda: {"demo": "train"})  # dataset -> its training section

    def extract_config(self, overrides: dict | None = None) -> ExtractConfig:
        return ExtractConfig.from_dict(deep_update(self.extract, overrides))

    def train_config(self, section: str = "train", overrides: dict | None = None) -> TrainConfig:
        """The training config of a section (``train`` for the demo, ``train_mosi``, ...) plus overrides."""
        return TrainConfig.from_dict(deep_update(self.train.get(section) or {}, overrides), section)


def load_params(path: str | Path | None = None) -> Params:
    """The params file (default: the project's params.yaml), checked; a missing default file means all defaults,
    a missing named file is an error."""
    if not path:
        default = in_project(DEFAULT_PARAMS)
        return load_params(default) if default.is_file() else Params()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        with open(path) as f:
            data = yaml.load(f, ParamsLoader) or {}
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
    build = check_value(data["build"], dict[str, str], "build") if "build" in data else Params().build
    serve = from_section(ServeConfig, data.get("serve"), "serve")
    check_datasets(build, serve, set(train) | {"train"})
    return Params(
        extract=extract,
        run=from_section(RunConfig, data.get("run"), "run"),
        demo=from_section(DemoConfig, data.get("demo"), "demo"),
        predict=from_section(PredictConfig, data.get("predict"), "predict"),
        serve=serve,
        train=train,
        build=build,
    )


def check_datasets(build: dict[str, str], serve: ServeConfig, sections: set[str]) -> None:
    """Dataset names usable as folder names, training sections that exist, and a dataset that is built and
    served training with the same section in both (DVC's train@<d> and the deployment train/<d>)."""
    named = [(f"build.{d}", d, section) for d, section in build.items()]
    named += [(f"serve.datasets.{d}.train_section", d, entry.train_section) for d, entry in serve.datasets.items()]
    for where, dataset, section in named:
        try:
            check_id(str(dataset), "dataset name")
        except DatasetError as err:
            raise ConfigError(f"{where}: {err}") from None
        if section not in sections:
            raise ConfigError(f"{where}: no training section {section!r} in params ({', '.join(sorted(sections))})")
    for dataset, section in build.items():
        served = serve.datasets.get(dataset)
        if served is not None and served.train_section != section:
            raise ConfigError(
                f"build.{dataset} trains with {section!r} but serve.datasets.{dataset}.train_section is "
                f"{served.train_section!r}: name the same section in both"
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
        node[leaf] = yaml.load(raw, ParamsLoader)
    return out
