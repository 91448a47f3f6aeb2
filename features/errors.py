"""The project's one exception family.

Every error the pipeline raises on purpose (bad params, a dataset folder it cannot use, broken media, a store or
bundle that does not fit, a retrain that could not finish, ...) derives from ``PipelineError``. That is what lets
the ``selfmm`` command report such problems as one line and let everything else, which is a bug, propagate with
its traceback: ``except PipelineError`` never hides a ``KeyError`` from a typo in the code.

A subclass keeps a builtin base (``ValueError``, ...) only where existing callers catch it that way.
"""

from __future__ import annotations

import errno
from pathlib import Path


class PipelineError(Exception):
    """A problem of the inputs or the environment that the user can fix; the message says what to do."""


class ConfigError(PipelineError, ValueError):
    """A bad setting: a params.yaml section, key or value, a ``--set`` override, or a config dataclass field.

    The message names the setting as ``section.key`` and what is allowed. A ValueError too, because config
    dataclasses validate in ``__post_init__`` and their callers and tests catch ValueError.
    """


class DiskFull(PipelineError):
    """No space left where a file was being written. Raised instead of the OSError, once the half-written
    temporary file is removed; a run stops at once on it (retrying cannot help) and a re-run after freeing space
    picks up from what was written whole."""

    def __init__(self, path: str | Path):
        super().__init__(
            f"{path}: the disk is full (no space left on device); nothing half-written was kept. Free some space "
            "and run the same command again: what was written whole is reused"
        )
        self.path = str(path)

    def __reduce__(self) -> tuple:  # pickled whole from worker processes
        return (type(self), (self.path,))


def is_disk_full(err: BaseException) -> bool:
    """Whether an OSError says the file system (or the user's quota on it) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
