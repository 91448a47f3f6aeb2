"""The project's one exception family.

Every error the pipeline raises on purpose (bad params, a dataset folder it cannot use, broken media, a store or
bundle that does not fit, a retrain that could not finish, ...) derives from ``PipelineError``. That is what lets
the ``selfmm`` command report such problems as one line and let everything else, which is a bug, propagate with
its traceback: ``except PipelineError`` never hides a ``KeyError`` from a typo in the code.

A subclass keeps a builtin base (``ValueError``, ...) only where existing callers catch it that way.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem of the inputs or the environment that the user can fix; the message says what to do."""


class ConfigError(PipelineError, ValueError):
    """A bad setting: a params.yaml section, key or value, a ``--set`` override, or a config dataclass field.

    The message names the setting as ``section.key`` and what is allowed. A ValueError too, because config
    dataclasses validate in ``__post_init__`` and their callers and tests catch ValueError.
    """
