"""Fused vector updates for the CG loop.

A CG iteration on a cheap operator is dominated by interpreter overhead: scipy spends
six to eight NumPy calls per iteration on temporaries (``alpha * p``, ``x += ...``,
``norm(r)``). These kernels do the same element-wise arithmetic in one pass and one
call each. The inner products that decide ``alpha`` and ``beta`` stay with NumPy's BLAS
``dot``, exactly as scipy computes them, so in float64 the iterates are scipy's bit for bit
(CG amplifies rounding differences, so matching the reductions is what keeps the two
sequences together). ``dot`` here, with four partial sums, serves the bookkeeping.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a @ b`` accumulated in float64."""
    n = a.shape[0]
    m = n - n % 4
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for i in range(0, m, 4):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
    for i in range(m, n):
        s0 += a[i] * b[i]
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=True, nogil=True)
def update_iterate(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float
) -> None:
    """``x += alpha p`` and ``r -= alpha q`` in place, in one pass."""
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        r[i] -= alpha * q[i]


@numba.njit(cache=True, nogil=True)
def add_scaled(out: np.ndarray, q: np.ndarray, p: np.ndarray, damping: float) -> None:
    """``out = q + damping * p`` without a temporary (NumPy's rounding: product, then sum)."""
    for i in range(out.shape[0]):
        out[i] = q[i] + damping * p[i]


@numba.njit(cache=True, nogil=True)
def update_direction(p: np.ndarray, z: np.ndarray, beta: float) -> None:
    """``p = beta p + z`` in place (scipy's ``p *= beta; p += z``, rounded the same way)."""
    for i in range(p.shape[0]):
        p[i] = p[i] * beta + z[i]
