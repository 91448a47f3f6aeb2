"""The portable float maths: preloaded in this session, correctly rounded, and what a restarted command gets."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from features import portable_math

SAMPLES = 2000
rng = np.random.default_rng(20)
# The float functions openSMILE, OpenCV, MediaPipe and LiteRT call, with inputs over their usual ranges.
UNARY = {
    "expf": (mpmath.exp, rng.uniform(-80, 80, SAMPLES)),
    "logf": (mpmath.log, np.exp(rng.uniform(-80, 80, SAMPLES))),
    "log10f": (mpmath.log10, np.exp(rng.uniform(-80, 80, SAMPLES))),
    "sinf": (mpmath.sin, rng.uniform(-100, 100, SAMPLES)),
    "cosf": (mpmath.cos, rng.uniform(-100, 100, SAMPLES)),
    "acosf": (mpmath.acos, rng.uniform(-1, 1, SAMPLES)),
    "tanhf": (mpmath.tanh, rng.uniform(-10, 10, SAMPLES)),
}
BINARY = {
    "powf": (mpmath.power, np.exp(rng.uniform(-3, 3, SAMPLES)), rng.uniform(-20, 20, SAMPLES)),
    "atan2f": (mpmath.atan2, rng.uniform(-10, 10, SAMPLES), rng.uniform(-10, 10, SAMPLES)),
}


def correctly_rounded(function, *args: np.float32) -> np.float32:
    """The exact value (100 bits) rounded once to float32's 24 bits, to nearest."""
    with mpmath.workprec(100):
        exact = function(*(mpmath.mpf(float(a)) for a in args))
    with mpmath.workprec(24):
        return np.float32(float(+exact))


def c_function(name: str, arity: int):
    """``name`` as the process resolves it: the preloaded library's definition comes first."""
    function = ctypes.CDLL(None)[name]
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float] * arity
    return function


def test_the_library_is_preloaded_and_names_itself():
    assert portable_math.loaded()
    assert portable_math.identity() == f"portable {portable_math.VERSION}"
    assert str(portable_math.library_path()) in os.environ["LD_PRELOAD"].split(":")


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_functions_are_correctly_rounded(name):
    function, inputs = UNARY[name]
    c = c_function(name, 1)
    wrong = [(x, c(x), correctly_rounded(function, x)) for x in inputs.astype(np.float32)]
    wrong = [w for w in wrong if np.float32(w[1]) != w[2]]
    assert not wrong, f"{name}: {len(wrong)} of {SAMPLES} not correctly rounded, e.g. {wrong[:3]}"


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_functions_are_correctly_rounded(name):
    function, xs, ys = BINARY[name]
    c = c_function(name, 2)
    pairs = zip(xs.astype(np.float32), ys.astype(np.float32))
    wrong = [(x, y, c(x, y), correctly_rounded(function, x, y)) for x, y in pairs]
    wrong = [w for w in wrong if np.float32(w[2]) != w[3]]
    assert not wrong, f"{name}: {len(wrong)} of {SAMPLES} not correctly rounded, e.g. {wrong[:3]}"


def test_a_command_restarts_itself_with_the_library():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SELFMM_PORTABLE_MATH_RESTARTED")}
    code = "from features import portable_math as m; print(m.identity()); m.reexec(); print(m.identity())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    # before the restart the C library's maths; the restarted command runs the code again, preloaded
    assert out.split() == ["glibc", out.split()[1], "portable", "1", "portable", "1"]


def test_without_the_library_a_command_warns_and_goes_on(monkeypatch, tmp_path):
    monkeypatch.setattr(portable_math, "loaded", lambda: False)
    monkeypatch.setattr(portable_math, "library_path", lambda: tmp_path / "absent.so")
    with pytest.warns(portable_math.PortableMathWarning, match="absent.so is not built"):
        portable_math.reexec()


def _restarted_with(also: tuple[str, ...]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SELFMM_PORTABLE_MATH_RESTARTED")}
    code = f"from features import portable_math as m; m.reexec(also={also!r}); "
    code += f"print(m.mapped({also[0]!r}), m.identity())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    return run.stdout.split()


@pytest.mark.skipif(not ctypes.util.find_library("tcmalloc_minimal"), reason="tcmalloc is not installed (setup.sh)")
def test_a_training_command_restarts_with_the_allocator_too():
    tcmalloc = ctypes.util.find_library("tcmalloc_minimal")
    assert tcmalloc is not None  # the skip above
    assert _restarted_with((tcmalloc,)) == ["True", "portable", "1"]


def test_a_library_that_cannot_be_preloaded_costs_one_restart_not_a_loop():
    assert _restarted_with(("libno-such-allocator.so",)) == ["False", "portable", "1"]
