"""A fixed grid that results are rounded to where the same computation may differ in its last bits between
machines (the C library's or numpy's SIMD maths, a BLAS kernel, OpenCV's CPU dispatch). A last-bit difference
is about 2^-52 of the value; it moves the value across a 2^-20 grid line with a chance of about 2^-32, so the
rounded results are the same bytes everywhere, and 2^-20 is far finer than anything the features measure."""

from __future__ import annotations

import numpy as np

GRID = 2.0**-20


def settle(x: np.ndarray | float) -> np.ndarray:
    """``x`` rounded to the nearest multiple of ``GRID``, in its own float type (scaling by a power of two is exact)."""
    return np.round(np.asarray(x) / GRID) * GRID
