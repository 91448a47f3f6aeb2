"""How the floating-point maths of training is pinned, so that a result reproduces on another machine.

torch picks its CPU kernels by instruction set (AVX-512, AVX2, ...) and MKL dispatches by CPU vendor and model,
so the same training run adds its sums in a different order, and gives other bits, on another CPU. In
``portable`` mode every choice that decides the bits on an x86-64 CPU with AVX2 is fixed:

- the thread count (from the config, never from the machine): parallel reductions split their work by it;
- torch's CPU capability (``ATEN_CPU_CAPABILITY=avx2``): its vectorised kernels;
- MKL's code path (``MKL_CBWR=COMPATIBLE``, conditional numerical reproducibility: the one branch that gives the
  same results on Intel and AMD CPUs);
- oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA=AVX2``);
- deterministic algorithms (``TrainConfig.deterministic``, applied by the trainer).

The environment variables only take effect when they are set before torch is first imported, so the CLI entry
point calls :func:`prepare_process` first. ``fast`` leaves all of it to the machine (real datasets, GPUs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from features.errors import PipelineError


class Numerics(StrEnum):
    PORTABLE = "portable"  # the same bits on any x86-64 CPU with AVX2; about 2x slower on the CPU
    FAST = "fast"  # whatever kernels the machine is fastest with


class NumericsError(PipelineError):
    """Portable numerics asked for where they cannot be guaranteed."""


PORTABLE_CAPABILITY = "AVX2"  # what torch.backends.cpu.get_cpu_capability() reports once pinned


# The variables that pin the kernels; read once, when torch (and MKL, oneDNN with it) loads.
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def portable_environment(threads: int) -> dict[str, str]:
    """The variables that pin the bits; threads also go to OpenMP and MKL, which read them at start-up."""
    return {**PINNED_KERNELS, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _unpinned() -> list[str]:
    """The kernel settings this process's environment does not hold, as ``NAME=value``."""
    return [f"{k}={v}" for k, v in PINNED_KERNELS.items() if os.environ.get(k) != v]


def prepare_process(numerics: Numerics | str, threads: int | None) -> dict[str, str]:
    """Set the portable environment in this process (before torch loads); returns what was set.

    ``fast`` sets nothing. Under ``portable`` a torch that is already imported with other settings is an error:
    the variables would be silently ignored.
    """
    if Numerics(numerics) is Numerics.FAST:
        return {}
    if threads is None:
        raise NumericsError("portable numerics need a fixed thread count: set train.threads in params.yaml")
    wanted = portable_environment(threads)
    if "torch" in sys.modules and (stale := _unpinned()):
        raise NumericsError(
            f"portable numerics must be set before torch is imported; torch is already loaded without "
            f"{', '.join(stale)}"
        )
    os.environ.update(wanted)
    return wanted


def check_prepared(cpu_capability: str) -> None:
    """Raise unless this process runs with the portable settings; ``cpu_capability`` is torch's own report
    (``torch.backends.cpu.get_cpu_capability()``), which is lower than asked for on a CPU without AVX2."""
    if unset := _unpinned():
        raise NumericsError(
            f"portable numerics: this process was started without {', '.join(unset)}; run it "
            "through the selfmm CLI, or call selfmm.numerics.prepare_process before importing torch"
        )
    if cpu_capability != PORTABLE_CAPABILITY:
        raise NumericsError(
            f"portable numerics need an x86-64 CPU with AVX2; torch runs with {cpu_capability} "
            "here (use numerics: fast)"
        )


@contextmanager
def environment(name: str, value: str, unless_set: bool = False) -> Iterator[None]:
    """``name=value`` in this process's environment for the block (with ``unless_set``, only when the caller set
    none); after the block the environment is as it was before."""
    previous = os.environ.get(name)
    if unless_set and previous is not None:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def pinned_threads(numerics: str, threads: int | None) -> Iterator[None]:
    """torch's thread count set to ``threads`` for the block (restored after); under portable numerics, first a
    check that the process was started with the settings that pin the bits (``prepare_process``)."""
    import torch

    if numerics == Numerics.PORTABLE:
        check_prepared(torch.backends.cpu.get_cpu_capability())
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the block (same seed, same device, same numbers); the caller's settings and
    environment are restored after."""
    if not enabled:
        yield
        return
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with environment("CUBLAS_WORKSPACE_CONFIG", ":4096:8", unless_set=True):  # cuBLAS needs this to be deterministic
        saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark,
        )
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels' backward passes are not deterministic
                yield
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.benchmark = saved[2]
