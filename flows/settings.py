"""Process-wide defaults set before Prefect or transformers are imported: offline, no telemetry, local state,
and no third-party start-up chatter unless asked for."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = "SELFMM_PROJECT"  # the project folder (params.yaml, data/, build/): the command's, inherited by flow runs


def apply_defaults(project: Path | None = None, verbose: bool = False) -> None:
    """The project (the working directory of a command) and Prefect state under it (``.prefect/``), no
    analytics, no model-hub access; without ``verbose`` no transformers progress bars or advisory warnings, and
    MediaPipe and LiteRT at their quietest."""
    project = (project or Path.cwd()).resolve()
    os.environ[PROJECT] = str(project)  # the served deployments' flow runs are started with it
    os.environ.setdefault("PREFECT_HOME", str(project / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "selfmm,features")  # library logs in flow runs
    if verbose:
        return
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe and LiteRT C++ log chatter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def in_project(path: str | Path) -> Path:
    """A path as a user gives it to a command or a deployment: a relative one is taken from the project folder,
    wherever the process that runs the flow was started. It stays relative when that is the working directory,
    so that what records it (failure messages in a store) does not depend on where the project lies."""
    project = os.environ.get(PROJECT)
    if not project or Path(project) == Path.cwd():
        return Path(path)
    return Path(project) / path
