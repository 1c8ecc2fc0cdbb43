"""One fused Numba kernel per CG iteration, whose inner products are NumPy's own BLAS ``ddot``.

After the operator, a CG iteration does four things to the vectors: ``p^T q``, the updates
``x += alpha p`` and ``r -= alpha q``, ``r^T r``, and the next direction ``p = beta p + r``.
As separate calls (two Numba kernels and two ``ndarray.dot``) each one meets the vectors and
the interpreter's own code cold when the operator streams a large matrix through the caches
(a dense ``n = 1000`` matvec reads 8 MB): four cold calls cost about eight times four warm
ones. :func:`cg_iteration_real` does the four in one call.

Bit for bit: CG amplifies rounding differences, so the inner products must be the very
``ddot`` that ``ndarray.dot`` calls, not a Numba loop (which sums in another order). The
BLAS library NumPy was built with is loaded already; its ``cblas_ddot`` is found through
NumPy's extension module (whose dependencies ``dlsym`` searches), registered with LLVM under a
name of our own and called as an external function, so the compiled kernel is cached on disk
like any other (the address is resolved when the cache is loaded, not stored in it). The
updates are element-wise and compiled without ``fastmath`` (no contraction to FMA), so they
round as NumPy's ``p *= beta; p += r`` and ``x += alpha * p`` do.

Where NumPy's ``ddot`` cannot be found (a NumPy built against a BLAS exporting other names),
or where the found function does not reproduce ``ndarray.dot`` bit for bit on a probe,
:func:`numpy_ddot_found` is False and :func:`trustregion.cg` keeps its unfused loop.
"""

from __future__ import annotations

import ctypes
import importlib
import math
from typing import Any

import llvmlite.binding as ll
import numba
import numpy as np
from numba import types

# The names of cblas_ddot in the BLAS libraries NumPy is built with, with the width of
# their integer arguments: NumPy's wheels (scipy-openblas, ILP64), other ILP64 builds, then
# LP64 builds. The ILP64 names come first: a library exporting both is used as NumPy uses it.
_DDOT_NAMES = (
    ("scipy_cblas_ddot64_", types.int64),
    ("cblas_ddot64_", types.int64),
    ("scipy_cblas_ddot", types.int32),
    ("cblas_ddot", types.int32),
)
# LLVM symbols of our own, so that the cached object code names them independently of
# which library provides them in this process
_SYMBOL = "trustregion_numpy_cblas_ddot"


def _find_numpy_ddot() -> tuple[bool, types.Integer]:
    """Register NumPy's ``cblas_ddot`` as :data:`_SYMBOL`: found, and the width of its integers."""
    try:
        numpy_c = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # pragma: no cover - NumPy 1.x
        numpy_c = importlib.import_module("numpy.core._multiarray_umath")
    try:
        library = ctypes.CDLL(numpy_c.__file__)
    except (OSError, TypeError):  # pragma: no cover - an extension without a loadable file
        return False, types.int64
    for name, width in _DDOT_NAMES:
        function = getattr(library, name, None)
        if function is not None:
            ll.add_symbol(_SYMBOL, ctypes.cast(function, ctypes.c_void_p).value)
            return True, width
    # Not found: the kernels below are never called (see numpy_ddot_found), so never
    # compiled and never linked against the missing symbol.
    return False, types.int64  # pragma: no cover


_SYMBOL_FOUND, _INT = _find_numpy_ddot()
_ddot: Any = types.ExternalFunction(
    _SYMBOL, types.float64(_INT, types.voidptr, _INT, types.voidptr, _INT)
)


@numba.njit(cache=True, nogil=True)
def numpy_ddot(a: np.ndarray, b: np.ndarray) -> float:
    """``a @ b`` for C-contiguous float64 vectors: the BLAS call of ``ndarray.dot``."""
    return _ddot(a.shape[0], a.ctypes.data, 1, b.ctypes.data, 1)


# The layout of the ``state`` vector the kernels read and update (float64 entries).
RR, PP, NULL_THRESHOLD, EPS, TOL_SQ, DAMPING, DAMPED, DONE, MAXITER = range(9)


@numba.njit(cache=True, nogil=True)
def cg_iteration_real(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, q_damped: np.ndarray,
    state: np.ndarray,
) -> tuple[bool, float, float]:
    r"""One CG iteration on C-contiguous float64 vectors, after the operator: ``q = A p``.

    ``state`` holds, at the indices named above, :math:`r^T r`, the estimate of
    :math:`\|p\|^2`, the curvature below which a direction counts as null, the machine
    epsilon, the squared tolerance, the damping :math:`\lambda` and whether it is added
    (``DAMPED`` nonzero: ``q_damped = q + lambda p`` is formed and used as ``q``; a damping
    that rescaling took to 0.0 is still added, as in the unfused loop), the number of
    iterations done and the iteration limit.

    If ``null_threshold * pp < p^T q < inf`` fails, nothing is changed and
    ``(False, p^T q, 0.0)`` is returned, for the caller to report. Otherwise
    :math:`\alpha = r^T r / p^T q` and :func:`cg_update_real` does the rest;
    ``(True, alpha, rr_new)`` is returned.

    Every operation is the one :func:`trustregion.cg`'s unfused loop does, in the same order:
    its results are that loop's bit for bit.
    """
    if state[DAMPED] != 0.0:
        damping = state[DAMPING]
        for i in range(x.shape[0]):
            q_damped[i] = q[i] + damping * p[i]
        return _iteration(x, r, p, q_damped, state)
    return _iteration(x, r, p, q, state)


@numba.njit(cache=True, nogil=True)
def _iteration(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, state: np.ndarray
) -> tuple[bool, float, float]:
    pq = _ddot(x.shape[0], p.ctypes.data, 1, q.ctypes.data, 1)
    pp = state[PP]
    null_threshold = state[NULL_THRESHOLD]
    if not (null_threshold * pp < pq < math.inf):  # also false for NaN
        return False, pq, 0.0
    eps = state[EPS]
    if pq * eps > null_threshold * pp:
        state[NULL_THRESHOLD] = eps * pq / pp
    alpha = state[RR] / pq
    return True, alpha, cg_update_real(x, r, p, q, alpha, state)


@numba.njit(cache=True, nogil=True)
def cg_update_real(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float,
    state: np.ndarray,
) -> float:
    r"""The rest of a CG iteration once :math:`\alpha` is known; returns the new :math:`r^T r`.

    ``x += alpha p`` and ``r -= alpha q``, then :math:`r^T r` (NumPy's ``ddot``); then, unless
    it is within the tolerance or the iteration limit is reached, the next direction
    ``p = beta p + r`` with :math:`\beta = r_{new}^T r_{new} / r^T r` (NumPy's
    ``p *= beta; p += r``, rounded the same way) and its estimated squared norm
    ``rr_new + beta^2 pp``. ``state`` as in :func:`cg_iteration_real`; ``r``, ``x`` and ``p``
    C-contiguous float64 (``q`` float64 of any layout).
    """
    n = x.shape[0]
    for i in range(n):
        x[i] += alpha * p[i]
        r[i] -= alpha * q[i]
    rr_new = _ddot(n, r.ctypes.data, 1, r.ctypes.data, 1)
    rr = state[RR]
    state[RR] = rr_new
    state[DONE] += 1.0
    if state[DONE] < state[MAXITER] and not rr_new <= state[TOL_SQ]:
        beta = rr_new / rr
        for i in range(n):
            p[i] = p[i] * beta + r[i]
        state[PP] = rr_new + beta * beta * state[PP]
    return rr_new


def _probe() -> bool:
    """Whether :func:`numpy_ddot` reproduces ``ndarray.dot`` here (lengths around the SIMD
    widths and unrolling of BLAS kernels, values of mixed magnitude)."""
    if not _SYMBOL_FOUND:
        return False
    rng = np.random.default_rng(20261130)
    for n in (*range(1, 40), 63, 64, 65, 127, 128, 129, 255, 257, 1000, 1001, 4099):
        a = rng.standard_normal(n) * np.exp(rng.uniform(-8.0, 8.0, n))
        b = rng.standard_normal(n) * np.exp(rng.uniform(-8.0, 8.0, n))
        if numpy_ddot(a, b) != float(a.dot(b)) or numpy_ddot(a, a) != float(a.dot(a)):
            return False
    return True


_FOUND: bool | None = None


def numpy_ddot_found() -> bool:
    """True when the fused kernels call NumPy's own ``ddot`` (probed once, on first use)."""
    global _FOUND
    if _FOUND is None:
        _FOUND = _probe()
    return _FOUND
