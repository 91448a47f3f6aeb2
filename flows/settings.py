"""Process-wide defaults set before Prefect or transformers are imported: offline, no telemetry, local state,
and no third-party start-up chatter unless asked for."""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

# Lines native libraries write straight to file descriptor 2, past Python's logging: TFLite's delegate notes,
# absl's pre-initialisation warning, and glog/absl INFO and WARNING records (I1201 ..., W0000 ...).
CHATTER = re.compile(rb"INFO: Created TensorFlow Lite|WARNING: All log messages before absl::|[IW]\d{4} ")


def apply_defaults(project: Path | None = None, verbose: bool = False) -> None:
    """Prefect state under the project (``.prefect/``), no analytics, no model-hub access; without ``verbose``
    no transformers progress bars or advisory warnings, and MediaPipe and LiteRT at their quietest."""
    project = project or Path.cwd()
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


def filter_native_stderr() -> None:
    """Route file descriptor 2 (native code and child processes) through a thread that drops ``CHATTER`` lines
    and passes every other line on; Python's own ``sys.stderr`` writes to the terminal directly, so progress
    bars still see a TTY. Lines native code writes in the last moment before the process exits may be lost."""
    terminal = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = open(os.dup(terminal), "w", buffering=1, errors="backslashreplace", closefd=True)

    def pump() -> None:
        with open(read, "rb") as pipe, open(terminal, "wb", buffering=0) as out:
            for line in pipe:
                if not CHATTER.match(line):
                    out.write(line)

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()
