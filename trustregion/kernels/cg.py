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
:func:`numpy_blas_found` is False and :func:`trustregion.cg` keeps its unfused loop.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import threading
from typing import Any

import llvmlite.binding as ll
import numba
import numpy as np
from numba import types

from trustregion.kernels.linalg import (
    cg_spectrum_extremes,
    update_direction_z,
    update_iterate_sqnorm_z,
)

# How NumPy's BLAS names its CBLAS functions, with the width of their integer arguments:
# NumPy's wheels (scipy-openblas, ILP64), other ILP64 builds, then LP64 builds. The ILP64
# names come first: a library exporting both is used as NumPy uses it.
_NAMINGS = (
    ("scipy_{}64_", types.int64),
    ("{}64_", types.int64),
    ("scipy_{}", types.int32),
    ("{}", types.int32),
)
# LLVM symbols of our own, so that the cached object code names them independently of
# which library provides them in this process
_SYMBOLS = {"cblas_ddot": "trustregion_numpy_cblas_ddot",
            "cblas_zdotc_sub": "trustregion_numpy_cblas_zdotc_sub"}


def _find_numpy_blas() -> tuple[bool, types.Integer]:
    """Register NumPy's ``cblas_ddot`` and ``cblas_zdotc_sub`` under :data:`_SYMBOLS`.

    Returns whether both were found (in one naming) and the width of their integers.
    """
    try:
        numpy_c = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # pragma: no cover - NumPy 1.x
        numpy_c = importlib.import_module("numpy.core._multiarray_umath")
    try:
        library = ctypes.CDLL(numpy_c.__file__)
    except (OSError, TypeError):  # pragma: no cover - an extension without a loadable file
        return False, types.int64
    for naming, width in _NAMINGS:
        functions: dict[str, Any] = {
            name: getattr(library, naming.format(name), None) for name in _SYMBOLS
        }
        if all(f is not None for f in functions.values()):
            for name, function in functions.items():
                ll.add_symbol(_SYMBOLS[name], ctypes.cast(function, ctypes.c_void_p).value)
            return True, width
    # Not found: the kernels below are never called (see numpy_blas_found), so never
    # compiled and never linked against the missing symbols.
    return False, types.int64  # pragma: no cover


_SYMBOLS_FOUND, _INT = _find_numpy_blas()
# double cblas_ddot(n, x, incx, y, incy); void cblas_zdotc_sub(n, x, incx, y, incy, *result)
_ddot: Any = types.ExternalFunction(
    _SYMBOLS["cblas_ddot"], types.float64(_INT, types.voidptr, _INT, types.voidptr, _INT)
)
_zdotc_sub: Any = types.ExternalFunction(
    _SYMBOLS["cblas_zdotc_sub"],
    types.void(_INT, types.voidptr, _INT, types.voidptr, _INT, types.voidptr),
)


# NumPy calls BLAS on at most this many elements at a time and adds the parts to 0.0
# (NPY_CBLAS_CHUNK: 2^30 with 32-bit BLAS integers, no limit with 64-bit ones)
_CHUNK = 2**30 if _INT is types.int32 else 2**62


@numba.njit(cache=True, nogil=True)
def _dot(n: int, a: int, b: int) -> float:
    """NumPy's ``DOUBLE_dot`` on C-contiguous float64 data at addresses ``a`` and ``b``."""
    total = 0.0
    done = 0
    while done < n:
        chunk = min(n - done, _CHUNK)
        offset = np.uintp(8 * done)
        total += _ddot(chunk, a + offset, 1, b + offset, 1)
        done += chunk
    return total


@numba.njit(cache=True, nogil=True)
def _vdot(n: int, a: int, b: int, out: np.ndarray) -> None:
    """NumPy's ``CDOUBLE_vdot`` on C-contiguous complex128 data at addresses ``a``, ``b``:
    ``out[0] + 1j out[1]``."""
    if n <= _CHUNK:  # one call (what the result is written to need not be allocated)
        _zdotc_sub(n, a, 1, b, 1, out.ctypes.data)
        out[0] = 0.0 + out[0]
        out[1] = 0.0 + out[1]
        return
    out[0] = 0.0
    out[1] = 0.0
    part = np.empty(2)
    done = 0
    while done < n:
        chunk = min(n - done, _CHUNK)
        offset = np.uintp(16 * done)
        _zdotc_sub(chunk, a + offset, 1, b + offset, 1, part.ctypes.data)
        out[0] += part[0]
        out[1] += part[1]
        done += chunk


@numba.njit(cache=True, nogil=True)
def numpy_ddot(a: np.ndarray, b: np.ndarray) -> float:
    """``a.dot(b)`` for C-contiguous float64 vectors: the same BLAS calls, without NumPy's
    floating-point error checks."""
    return _dot(a.shape[0], a.ctypes.data, b.ctypes.data)


@numba.njit(cache=True, nogil=True)
def numpy_zdotc(a: np.ndarray, b: np.ndarray) -> complex:
    """``np.vdot(a, b)`` for C-contiguous complex128 vectors (the same BLAS calls)."""
    out = np.empty(2)
    _vdot(a.shape[0], a.ctypes.data, b.ctypes.data, out)
    return complex(out[0], out[1])


# The layout of the ``state`` vector the kernels read and update (float64 entries):
# r^T r, the estimate of ||p||^2, the curvature below which a direction counts as null,
# eps, the squared tolerance, the damping and whether it is added (nonzero: a damping that
# rescaling took to 0.0 is still added, as in the unfused loop), the iterations done and the
# limit, sqrt(eps), p^H q (real and imaginary parts, complex only), and whether to check that
# |p^T q| / pp lies in (LO_RQ, HI_RQ) (the first iteration's scale check); whether to find
# the extreme Ritz values when the iteration ends (0.0: no; otherwise the factor the operator
# was rescaled by, which they are divided by), and what was found (see
# :func:`_spectrum_at_end`): the two values, the condition estimate and how many iterations
# were kept (0: not found), in the order of :class:`trustregion.CGSpectrum`'s fields.
(RR, PP, NULL_THRESHOLD, EPS, TOL_SQ, DAMPING, DAMPED, DONE, MAXITER, SQRT_EPS, PQ_REAL,
 PQ_IMAG, CHECK_RANGE, LO_RQ, HI_RQ, SPECTRUM, EIG_MIN, EIG_MAX, CONDITION, KEPT) = range(20)
STATE_SIZE = 20
# Iterations whose residual has fallen to this fraction of the first (in the M-norm, squared,
# in units of the dtype's eps squared) are at the rounding floor: their coefficients describe
# rounding noise, not the operator, and put Ritz values outside its spectrum. The spectrum
# is cut there (here and in trustregion.core.cg).
ROUNDING_FLOOR = 64.0**2
# What an iteration kernel did: the iteration (and the new residual is within the
# tolerance: CONVERGED), or nothing (but q_damped) because p^T q failed the curvature test,
# or because the caller must check that the operator is Hermitian, or because the first
# iteration's p^T q is out of the safe range, or because the record is full, or (nothing at
# all) because the operator's output is not of the problem's length.
ITERATED, CONVERGED, CURVATURE, CHECK_HERMITIAN, OUT_OF_RANGE, RECORD_FULL, WRONG_LENGTH = (
    range(7)
)


@numba.njit(cache=True, nogil=True)
def cg_iteration_real(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, q_damped: np.ndarray,
    state: np.ndarray,
) -> tuple[int, float, float]:
    r"""One CG iteration on C-contiguous float64 vectors, after the operator: ``q = A p``.

    ``state`` as described at :data:`STATE_SIZE`. With damping, ``q_damped = q + lambda p``
    is formed first and used as ``q``. If ``null_threshold * pp < p^T q < inf`` fails,
    nothing else is changed and ``(CURVATURE, p^T q, 0.0)`` is returned, for the caller to
    report (``(OUT_OF_RANGE, p^T q, 0.0)`` likewise when the scale check is on and fails).
    Otherwise :math:`\alpha = r^T r / p^T q`, :func:`cg_update_real` does the rest, and
    ``(ITERATED, alpha, rr_new)`` is returned.

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
) -> tuple[int, float, float]:
    pq = _dot(x.shape[0], p.ctypes.data, q.ctypes.data)
    pp = state[PP]
    if state[CHECK_RANGE] != 0.0 and not (state[LO_RQ] < abs(pq) / pp < state[HI_RQ]):
        return OUT_OF_RANGE, pq, 0.0
    null_threshold = state[NULL_THRESHOLD]
    if not (null_threshold * pp < pq < math.inf):  # also false for NaN
        return CURVATURE, pq, 0.0
    eps = state[EPS]
    if pq * eps > null_threshold * pp:
        state[NULL_THRESHOLD] = eps * pq / pp
    alpha = state[RR] / pq
    return ITERATED, alpha, cg_update_real(x, r, p, q, alpha, state)


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
    rr_new = _dot(n, r.ctypes.data, r.ctypes.data)
    rr = state[RR]
    state[RR] = rr_new
    state[DONE] += 1.0
    if state[DONE] < state[MAXITER] and not rr_new <= state[TOL_SQ]:
        beta = rr_new / rr
        for i in range(n):
            p[i] = p[i] * beta + r[i]
        state[PP] = rr_new + beta * beta * state[PP]
    return rr_new


@numba.njit(cache=True, nogil=True)
def cg_iteration_complex(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, q_damped: np.ndarray,
    state: np.ndarray,
) -> tuple[int, float, float]:
    r""":func:`cg_iteration_real` for C-contiguous complex128 vectors (Hermitian operators).

    :math:`p^H q` is NumPy's ``zdotc`` (as ``np.vdot``), stored at ``state[PQ_REAL]`` and
    ``state[PQ_IMAG]``. If its imaginary part exceeds ``sqrt(eps)`` times its real part,
    nothing else is done and ``CHECK_HERMITIAN`` is returned: the caller decides whether the
    operator is Hermitian (which needs ``||q||``) and, if so, resumes with
    :func:`cg_resume_step_complex`. The rest is :func:`cg_iteration_real`'s, with the updates on
    the real and imaginary parts (:mod:`.linalg`'s ``_z`` kernels, whose new ``||r||^2`` is
    summed in the update's pass); returns ``(ITERATED, alpha, rr_new)`` or
    ``(CURVATURE, Re p^H q, 0.0)``.
    """
    if state[DAMPED] != 0.0:
        damping = state[DAMPING]
        for i in range(x.shape[0]):
            q_damped[i] = q[i] + damping * p[i]
        return _iteration_complex(x, r, p, q_damped, state, True)
    return _iteration_complex(x, r, p, q, state, True)


@numba.njit(cache=True, nogil=True)
def _iteration_complex(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, state: np.ndarray, fresh: bool
) -> tuple[int, float, float]:
    n = x.shape[0]
    if fresh:
        _vdot(n, p.ctypes.data, q.ctypes.data, state[PQ_REAL:])
        if state[CHECK_RANGE] != 0.0 and not (
            state[LO_RQ] < abs(state[PQ_REAL]) / state[PP] < state[HI_RQ]
        ):
            return OUT_OF_RANGE, state[PQ_REAL], 0.0
        if abs(state[PQ_IMAG]) > state[SQRT_EPS] * abs(state[PQ_REAL]):
            return CHECK_HERMITIAN, 0.0, 0.0
    pq = state[PQ_REAL]
    pp = state[PP]
    null_threshold = state[NULL_THRESHOLD]
    if not (null_threshold * pp < pq < math.inf):  # also false for NaN
        return CURVATURE, pq, 0.0
    eps = state[EPS]
    if pq * eps > null_threshold * pp:
        state[NULL_THRESHOLD] = eps * pq / pp
    rr = state[RR]
    alpha = rr / pq
    if state[CHECK_RANGE] != 0.0:  # the first iteration: ||r||^2 as np.vdot, as unfused
        return ITERATED, alpha, cg_update_complex(x, r, p, q, alpha, state)
    rr_new = update_iterate_sqnorm_z(x, r, p, q, alpha)
    state[RR] = rr_new
    state[DONE] += 1.0
    if state[DONE] < state[MAXITER] and not rr_new <= state[TOL_SQ]:
        beta = rr_new / rr
        update_direction_z(p, r, beta)
        state[PP] = rr_new + beta * beta * pp
    return ITERATED, alpha, rr_new


@numba.njit(cache=True, nogil=True)
def cg_update_complex(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float,
    state: np.ndarray,
) -> float:
    """:func:`cg_update_real` for complex128 (``x``, ``r``, ``p`` C-contiguous), the new
    ``||r||^2`` as ``np.vdot(r, r).real``: the first iteration's update (later ones sum
    ``||r||^2`` in the update's pass, see :func:`cg_iteration_complex`)."""
    n = x.shape[0]
    for i in range(n):
        x[i] += alpha * p[i]
        r[i] -= alpha * q[i]
    _vdot(n, r.ctypes.data, r.ctypes.data, state[PQ_REAL:])
    rr_new = state[PQ_REAL]
    rr = state[RR]
    state[RR] = rr_new
    state[DONE] += 1.0
    if state[DONE] < state[MAXITER] and not rr_new <= state[TOL_SQ]:
        beta = rr_new / rr
        update_direction_z(p, r, beta)
        state[PP] = rr_new + beta * beta * state[PP]
    return rr_new


@numba.njit(cache=True, nogil=True)
def cg_step_real(
    work: np.ndarray, q: np.ndarray, state: np.ndarray, record: np.ndarray
) -> int:
    """:func:`cg_iteration_real` on the rows of ``work`` (``x``, ``r``, ``p`` and, damped,
    ``q_damped``: one argument instead of four, which a call pays for), writing the step
    length and the new ``r^T r`` to ``record`` (``rr_0, alpha_0, rr_1, ...``) instead of
    returning them. ``RECORD_FULL`` (nothing done) asks for a longer ``record``,
    ``WRONG_LENGTH`` (nothing done) says that ``q`` is not of the length of ``x``; with
    ``CURVATURE``, ``p^T q`` is at ``state[PQ_REAL]``."""
    if q.shape[0] != work.shape[1]:
        return WRONG_LENGTH
    done = int(state[DONE])
    if 2 * done + 2 >= record.shape[0]:
        return RECORD_FULL
    x, r, p = work[0], work[1], work[2]
    if state[DAMPED] != 0.0:
        q_damped = work[3]
        damping = state[DAMPING]
        for i in range(x.shape[0]):
            q_damped[i] = q[i] + damping * p[i]
        what, alpha, rr = _iteration(x, r, p, q_damped, state)
    else:
        what, alpha, rr = _iteration(x, r, p, q, state)
    return _recorded(what, alpha, rr, done, state, record)


@numba.njit(cache=True, nogil=True)
def _recorded(
    what: int, alpha: float, rr: float, done: int, state: np.ndarray, record: np.ndarray
) -> int:
    if what != ITERATED:
        if what == CURVATURE:
            state[PQ_REAL] = alpha  # (p^T q)
        return what
    record[2 * done + 1] = alpha
    record[2 * done + 2] = rr
    state[CHECK_RANGE] = 0.0  # (the first iteration's scale check is done)
    what = CONVERGED if rr <= state[TOL_SQ] else ITERATED
    if state[SPECTRUM] != 0.0 and (what == CONVERGED or state[DONE] >= state[MAXITER]):
        _spectrum_at_end(state, record, done + 1)
    return what


@numba.njit(cache=True, nogil=True)
def _spectrum_at_end(state: np.ndarray, record: np.ndarray, k: int) -> None:
    """The extreme Ritz values of the ``k`` iterations in ``record``, into ``state``.

    What :func:`trustregion.cg` would find from the same record after the solve
    (:func:`.linalg.cg_spectrum_extremes` on the step lengths and squared residual norms,
    cut at the rounding floor; then divided by the scale factor in ``state[SPECTRUM]``,
    exact for a power of two, and their ratio), found in the iteration kernel's last call
    instead of a call of its own, which costs more than the arithmetic: ``state[KEPT]``
    iterations kept, ``state[EIG_MIN]``, ``state[EIG_MAX]``, ``state[CONDITION]``.
    """
    eps = state[EPS]
    kept, lo, hi = cg_spectrum_extremes(
        record[1 : 2 * k : 2], record[0 : 2 * k + 1 : 2], ROUNDING_FLOOR * eps * eps
    )
    scale = state[SPECTRUM]
    if scale != 1.0:
        lo, hi = lo / scale, hi / scale
    state[KEPT] = kept
    state[EIG_MIN] = lo
    state[EIG_MAX] = hi
    state[CONDITION] = hi / lo if lo > 0.0 else math.inf


@numba.njit(cache=True, nogil=True)
def cg_step_complex(
    work: np.ndarray, q: np.ndarray, state: np.ndarray, record: np.ndarray
) -> int:
    """:func:`cg_step_real` for complex128 (:func:`cg_iteration_complex` on the rows of
    ``work``); after ``CHECK_HERMITIAN`` resume with :func:`cg_resume_step_complex`."""
    if q.shape[0] != work.shape[1]:
        return WRONG_LENGTH
    done = int(state[DONE])
    if 2 * done + 2 >= record.shape[0]:
        return RECORD_FULL
    x, r, p = work[0], work[1], work[2]
    if state[DAMPED] != 0.0:
        q_damped = work[3]
        damping = state[DAMPING]
        for i in range(x.shape[0]):
            q_damped[i] = q[i] + damping * p[i]
        what, alpha, rr = _iteration_complex(x, r, p, q_damped, state, True)
    else:
        what, alpha, rr = _iteration_complex(x, r, p, q, state, True)
    return _recorded(what, alpha, rr, done, state, record)


@numba.njit(cache=True, nogil=True)
def cg_resume_step_complex(
    work: np.ndarray, q: np.ndarray, state: np.ndarray, record: np.ndarray
) -> int:
    """The rest of :func:`cg_step_complex` after ``CHECK_HERMITIAN`` found the operator
    Hermitian (``q`` the damped product if damped)."""
    done = int(state[DONE])
    what, alpha, rr = _iteration_complex(work[0], work[1], work[2], q, state, False)
    return _recorded(what, alpha, rr, done, state, record)


_STRICT: dict[bool, Any] = {}
# Two threads may start their first solve at once (the TRPO agent's policy step and its
# trust-region critic fit do): the second must not ask Numba to compile a kernel the first
# has just compiled and frozen ("compilation disabled").
_STRICT_LOCK = threading.Lock()


def strict_step_kernel(complex_: bool) -> Any:
    """:func:`cg_step_complex` or :func:`cg_step_real`, compiled for the arrays
    :func:`trustregion.cg` passes and no others: C-contiguous rows ``work``, ``state`` and
    ``record``, and a writable, aligned, C-contiguous operator output ``q`` of the dtype.

    Called with a ``q`` of any other type (strided, another dtype, read-only, not an array,
    not a vector) the kernel does not compile a version for it but refuses it with a
    ``TypeError`` from its type dispatch, before anything runs: the caller's cue to check
    and convert the output in Python. The dispatch checks the type of ``q`` anyway, and
    after an operator that streams a large matrix through the caches the same checks in
    Python (``type``, ``dtype``, ``shape`` and ``strides`` of ``q``) cost about 4 us an
    iteration. A ``q`` of the wrong length is refused by the kernel itself
    (``WRONG_LENGTH``).
    """
    kernel = _STRICT.get(complex_)
    if kernel is not None:
        return kernel
    with _STRICT_LOCK:
        kernel = _STRICT.get(complex_)
        if kernel is None:  # not built by a thread that held the lock before this one
            kernel = cg_step_complex if complex_ else cg_step_real
            dtype = types.complex128 if complex_ else types.float64
            kernel.compile((types.Array(dtype, 2, "C"), types.Array(dtype, 1, "C"),
                            types.float64[::1], types.float64[::1]))
            kernel.disable_compile()
            _STRICT[complex_] = kernel
    return kernel


def _probe() -> bool:
    """Whether :func:`numpy_ddot` and :func:`numpy_zdotc` reproduce ``ndarray.dot`` and
    ``np.vdot`` here (lengths around the SIMD widths and unrolling of BLAS kernels, values of
    mixed magnitude)."""
    if not _SYMBOLS_FOUND:
        return False
    rng = np.random.default_rng(20261130)
    for n in (*range(1, 40), 63, 64, 65, 127, 128, 129, 255, 257, 1000, 1001, 4099):
        a = rng.standard_normal(n) * np.exp(rng.uniform(-8.0, 8.0, n))
        b = rng.standard_normal(n) * np.exp(rng.uniform(-8.0, 8.0, n))
        if numpy_ddot(a, b) != float(a.dot(b)) or numpy_ddot(a, a) != float(a.dot(a)):
            return False
        u, w = a[: n // 2 * 2].view(np.complex128), b[: n // 2 * 2].view(np.complex128)
        if numpy_zdotc(u, w) != complex(np.vdot(u, w)):
            return False
    return True


_FOUND: bool | None = None


def numpy_blas_found() -> bool:
    """True when the fused kernels call NumPy's own ``ddot`` and ``zdotc`` (probed once, on
    first use); otherwise :func:`trustregion.cg` keeps its unfused loops."""
    global _FOUND
    if _FOUND is None:
        _FOUND = _probe()
    return _FOUND
