"""Scaling by powers of two, exact and without raising: the rescalings that keep the step
computations of :mod:`trustregion.core.step`, :mod:`trustregion.core.steihaug` and
:mod:`trustregion.solvers.cpo` away from overflow and underflow."""

from __future__ import annotations

import math

import numpy as np


def ldexp(x: float, e: int) -> float:
    """``x * 2**e`` as a float, inf on overflow (``math.ldexp`` raises instead)."""
    try:
        return math.ldexp(x, e)
    except OverflowError:
        return math.copysign(math.inf, x)


def times_pow2(u: np.ndarray, e: int) -> np.ndarray:
    """``u * 2**e`` in float64, exact unless the result leaves the normal range.

    One product when ``2**e`` is a float64 (then bit for bit ``u * math.ldexp(1.0, e)``);
    otherwise two, as ``2**e`` itself over- or underflows (a subnormal ``u`` needs ``e``
    up to 1074, and ``math.ldexp(1.0, 1024)`` raises).
    """
    u = np.asarray(u, dtype=np.float64)
    if -1074 <= e <= 1023:
        return u * math.ldexp(1.0, e)
    first = e // 2
    return (u * math.ldexp(1.0, first)) * math.ldexp(1.0, e - first)
