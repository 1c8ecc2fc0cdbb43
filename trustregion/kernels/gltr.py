"""Kernels of GLTR (private to ``minimize(method="trust-krylov")``).

:func:`cg_step_update` is the vector work of one CG step of the Lanczos process (the
update of the iterate and the residual, its reorthogonalization, the next Lanczos vector
and direction) in one call instead of a dozen NumPy calls on short vectors.

GLTR solves :math:`\\min_{\\|h\\| \\le \\Delta} \\gamma h_1 + \\tfrac12 h^T T h` with a small
symmetric tridiagonal :math:`T` once or more per Lanczos step. Every operation is
:math:`O(k)` on a few-dozen-element vector, so the time is interpreter and wrapper
overhead unless the whole Moré-Sorensen iteration runs compiled: these kernels do the
:math:`LDL^T` factorizations, the solves, the Newton steps on the secular equation and the
Sturm-bisection for the smallest eigenvalue in one call.

Input contract: ``diag`` (k,), ``off`` (k - 1,), float64, finite, k >= 1; ``radius > 0``.
The validating caller is
:func:`trustregion.solvers._subproblems.tridiagonal.tridiagonal_subproblem`.
"""

from __future__ import annotations

import numba
import numpy as np

_EPS = 2.220446049250313e-16


@numba.njit(cache=True, nogil=True)
def smallest_eigenvalue(diag: np.ndarray, off: np.ndarray) -> float:
    """The smallest eigenvalue of T by bisection on the Sturm count (Golub & Van Loan, 8.4.1),
    to a few ulps of the Gershgorin scale."""
    k = diag.shape[0]
    lower = np.inf
    upper = -np.inf
    for i in range(k):
        radius = 0.0
        if i > 0:
            radius += abs(off[i - 1])
        if i < k - 1:
            radius += abs(off[i])
        lower = min(lower, diag[i] - radius)
        upper = max(upper, diag[i] + radius)
    scale = max(abs(lower), abs(upper), 1e-300)
    for _ in range(200):
        if upper - lower <= 4.0 * _EPS * scale:
            break
        mid = 0.5 * (lower + upper)
        # number of eigenvalues below mid = number of negative pivots of T - mid I
        count = 0
        pivot = diag[0] - mid
        if pivot < 0.0:
            count += 1
        for i in range(1, k):
            if pivot == 0.0:
                pivot = _EPS * scale
            pivot = diag[i] - mid - off[i - 1] * off[i - 1] / pivot
            if pivot < 0.0:
                count += 1
        if count >= 1:
            upper = mid
        else:
            lower = mid
    return 0.5 * (lower + upper)


@numba.njit(cache=True, nogil=True)
def _factor(diag: np.ndarray, off: np.ndarray, lam: float, d: np.ndarray, l: np.ndarray) -> bool:
    """LDL^T of T + lam I into (d, l); False when a pivot is not positive."""
    k = diag.shape[0]
    d[0] = diag[0] + lam
    if not d[0] > 0.0:
        return False
    for i in range(k - 1):
        l[i] = off[i] / d[i]
        d[i + 1] = diag[i + 1] + lam - l[i] * off[i]
        if not d[i + 1] > 0.0:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _solve(d: np.ndarray, l: np.ndarray, rhs: np.ndarray, out: np.ndarray) -> None:
    """out = (L D L^T)^{-1} rhs."""
    k = d.shape[0]
    out[0] = rhs[0]
    for i in range(1, k):
        out[i] = rhs[i] - l[i - 1] * out[i - 1]
    for i in range(k):
        out[i] /= d[i]
    for i in range(k - 2, -1, -1):
        out[i] -= l[i] * out[i + 1]


@numba.njit(cache=True, nogil=True)
def _norm(x: np.ndarray) -> float:
    s = 0.0
    for v in x:
        s += v * v
    return np.sqrt(s)


@numba.njit(cache=True, nogil=True)
def tridiagonal_trust_region(
    diag: np.ndarray,
    off: np.ndarray,
    gamma: float,
    radius: float,
    rtol: float,
    maxiter: int,
    h: np.ndarray,
    lam_start: float,
) -> tuple[int, float, float]:
    """Moré-Sorensen on T; writes the solution into ``h``. ``lam_start`` > 0 is a guess of
    the multiplier (the previous one, as T grows by a row), used when it is right of the
    pole; otherwise Newton starts just right of the pole.

    Returns ``(case, lam, theta_min)``: case 0 interior (lam = 0), 1 on the boundary, 2 the
    hard case (``h`` is the solution at ``lam = -theta_min`` before the completion along
    the eigenvector, which the caller adds).
    """
    k = diag.shape[0]
    d = np.empty(k)
    l = np.empty(max(k - 1, 1))
    rhs = np.zeros(k)
    rhs[0] = -gamma
    u = np.empty(k)
    theta = smallest_eigenvalue(diag, off)
    if theta > 0.0 and _factor(diag, off, 0.0, d, l):
        _solve(d, l, rhs, h)
        if _norm(h) <= radius:
            return 0, 0.0, theta
    lam_low = max(0.0, -theta)
    scale = abs(gamma) / radius
    for i in range(k):
        scale = max(scale, abs(diag[i]))
    for i in range(k - 1):
        scale = max(scale, abs(off[i]))
    # start just right of the pole: there ||h|| > radius unless this is the hard case
    shift = max(1e3 * _EPS * scale, 1e-300)
    lam = lam_low + shift
    while not _factor(diag, off, lam, d, l):  # rounding: not yet positive definite
        shift *= 10.0
        lam = lam_low + shift
    _solve(d, l, rhs, h)
    h_norm = _norm(h)
    if h_norm < radius:
        return 2, lam_low, theta
    if lam_start > lam and _factor(diag, off, lam_start, d, l):
        # a warm start: from either side of the root, the safeguard below keeps Newton
        # right of the pole, and from the left it converges monotonically
        lam = lam_start
        _solve(d, l, rhs, h)
        h_norm = _norm(h)
    else:
        _factor(diag, off, lam, d, l)
    for _ in range(maxiter):
        if abs(h_norm - radius) <= rtol * radius:
            break
        _solve(d, l, h, u)
        curvature = 0.0
        for i in range(k):
            curvature += h[i] * u[i]
        lam_new = lam + (h_norm * h_norm / curvature) * (h_norm - radius) / radius
        if not lam_new > lam_low:  # only from the right of the root: halve the gap instead
            lam_new = lam_low + 0.5 * (lam - lam_low)
        if not _factor(diag, off, lam_new, d, l):
            _factor(diag, off, lam, d, l)
            break
        lam = lam_new
        _solve(d, l, rhs, h)
        h_norm = _norm(h)
    # onto the boundary: removes the last rounding of ||h|| without moving lambda
    for i in range(k):
        h[i] *= radius / h_norm
    return 1, lam, theta


@numba.njit(cache=True, nogil=True)
def cg_step_update(
    s: np.ndarray,
    r: np.ndarray,
    p: np.ndarray,
    Hp: np.ndarray,
    Q: np.ndarray,
    k: int,
    alpha: float,
    update_s: bool,
) -> tuple[float, float]:
    """One CG step in place: ``s += alpha p`` (if ``update_s``), ``r += alpha Hp``, then
    ``r`` is reorthogonalized against the rows ``Q[:k]`` (classical Gram-Schmidt).

    Returns ``(r^T r, s^T s)``. The caller forms the next direction with
    :func:`cg_direction` once it has ``beta``.
    """
    n = r.shape[0]
    ss = 0.0
    if update_s:
        for i in range(n):
            s[i] += alpha * p[i]
            ss += s[i] * s[i]
    for i in range(n):
        r[i] += alpha * Hp[i]
    for j in range(k):
        c = 0.0
        for i in range(n):
            c += Q[j, i] * r[i]
        for i in range(n):
            r[i] -= c * Q[j, i]
    rr = 0.0
    for i in range(n):
        rr += r[i] * r[i]
    return rr, ss


@numba.njit(cache=True, nogil=True)
def cg_direction(
    r: np.ndarray, p: np.ndarray, beta: float, q_out: np.ndarray, q_scale: float
) -> None:
    """``p = -r + beta p`` and the Lanczos vector ``q_out = q_scale * r``, in place."""
    for i in range(r.shape[0]):
        p[i] = -r[i] + beta * p[i]
        q_out[i] = q_scale * r[i]


@numba.njit(cache=True, nogil=True)
def lanczos_update(w: np.ndarray, Q: np.ndarray, k: int, coupling: float) -> tuple[float, float]:
    """One Lanczos step in place on ``w = H q_k``: ``delta = q_k^T w``,
    ``w -= delta q_k + coupling q_{k-1}``, then ``w`` reorthogonalized twice against the rows
    ``Q[:k + 1]``. Returns ``(delta, |w|)``."""
    n = w.shape[0]
    delta = 0.0
    for i in range(n):
        delta += Q[k, i] * w[i]
    for i in range(n):
        w[i] -= delta * Q[k, i]
    if k > 0 and coupling != 0.0:
        for i in range(n):
            w[i] -= coupling * Q[k - 1, i]
    for _ in range(2):  # "twice is enough" (Parlett)
        for j in range(k + 1):
            c = 0.0
            for i in range(n):
                c += Q[j, i] * w[i]
            for i in range(n):
                w[i] -= c * Q[j, i]
    ww = 0.0
    for i in range(n):
        ww += w[i] * w[i]
    return delta, np.sqrt(ww)
