"""Float maths that gives the same bytes under every C library, for the processes that extract features.

openSMILE, OpenCV, MediaPipe and LiteRT call the C library's float functions (``logf``, ``powf``, ``atan2f``...).
glibc 2.41 (Debian 13) made many of them correctly rounded and glibc 2.36 (Debian 12) is an ulp off at times, so
the same media gave other openSMILE and face features on each. ``portable_math.c`` computes each of those
functions through its double counterpart and rounds once, which is the correctly rounded float under both.
``./setup.sh`` builds it into the venv. A process takes it only through ``LD_PRELOAD``, set before the process
starts: ``reexec()`` restarts the running command with it (the ``selfmm`` command, the test session, the
benchmarks), and worker processes inherit it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

LIBRARY = Path("lib/selfmm/libportablemath.so")  # under sys.prefix, built by setup.sh
VERSION = 1  # what portable_math.c's selfmm_portable_math() returns
_MARKER = "selfmm_portable_math"
_RESTARTED = "SELFMM_PORTABLE_MATH_RESTARTED"  # what the re-exec preloaded, so a failed preload cannot loop


class PortableMathWarning(UserWarning):
    """Features computed here may differ in the last bits from those of a machine with another C library."""


def library_path() -> Path:
    """Where ``./setup.sh`` puts the built library in the running venv."""
    return Path(sys.prefix) / LIBRARY


def loaded() -> bool:
    """Whether this process resolves the float maths to the portable library."""
    try:
        version = ctypes.CDLL(None)[_MARKER]
    except AttributeError:
        return False
    version.restype = ctypes.c_int
    return version() == VERSION


def mapped(library: str) -> bool:
    """Whether this process has ``library`` (a path, a file name or a soname) loaded: the maps name the file
    the soname links to (``libtcmalloc_minimal.so.4`` -> ``libtcmalloc_minimal.so.4.5.10``)."""
    name = Path(library).name
    with open("/proc/self/maps") as maps:
        return any(Path(line.split()[-1]).name.startswith(name) for line in maps if "/" in line)


def identity() -> str:
    """The float maths features are computed with: part of the audio and vision identities (and cache keys)."""
    return f"portable {VERSION}" if loaded() else f"glibc {platform.libc_ver()[1]}"


def reexec(before: Callable[[], None] | None = None, also: Sequence[str] = ()) -> None:
    """Restart this command with the portable library preloaded, unless it is loaded already.

    Without a built library (no ``./setup.sh``, no C compiler) it warns and returns: the command still runs, and
    the features it makes say ``glibc <version>`` in their identity. ``also``: other libraries to preload with it
    (the training commands' memory allocator), each by path or soname. ``before`` runs just before the restart
    (pytest hands its captured output back there).
    """
    others = [name for name in also if not mapped(name)]
    if loaded() and not others:
        return
    library = library_path()
    libraries = ([str(library)] if library.is_file() and not loaded() else []) + others
    wanted = ":".join(libraries)
    if libraries and os.environ.get(_RESTARTED) != wanted:  # the same libraries again: their preload failed
        preload = ":".join([wanted, *filter(None, [os.environ.get("LD_PRELOAD")])])
        if before is not None:
            before()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "LD_PRELOAD": preload, _RESTARTED: wanted})
    if not loaded():
        reason = "was preloaded but is not in use" if library.is_file() else "is not built (run ./setup.sh)"
        warnings.warn(
            f"{library} {reason}: float maths comes from this machine's C library, so features computed here may "
            "differ in the last bits from another machine's",
            PortableMathWarning,
            stacklevel=2,
        )
