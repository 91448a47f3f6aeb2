"""Process-wide defaults set before Prefect or transformers are imported: offline, no telemetry, local state."""

from __future__ import annotations

import os
from pathlib import Path


def apply_defaults(project: Path | None = None) -> None:
    """Prefect state under the project (``.prefect/``), no analytics, no model-hub access."""
    project = project or Path.cwd()
    os.environ.setdefault("PREFECT_HOME", str(project / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "selfmm,features")  # library logs in flow runs
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe and LiteRT C++ log chatter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
