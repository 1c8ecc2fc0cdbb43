r"""The trust-region subproblem with a symmetric tridiagonal matrix (Moré-Sorensen).

.. math::  \min_{\|h\| \le \Delta}\; \gamma\, h_1 + \tfrac12 h^T T h ,

:math:`T` symmetric tridiagonal (diagonal ``diag``, off-diagonal ``off``; a zero in ``off``
splits it into blocks). This is the subproblem GLTR solves in its Lanczos basis. The
solution satisfies :math:`(T + \lambda I) h = -\gamma e_1` with :math:`T + \lambda I \succeq
0`, :math:`\lambda \ge 0` and :math:`\lambda (\Delta - \|h\|) = 0` (Moré & Sorensen 1983).

- The smallest eigenpair :math:`(\theta_1, v_1)` of :math:`T` comes from LAPACK's
  tridiagonal eigensolver (``scipy.linalg.eigh_tridiagonal``, only that pair).
- If :math:`\theta_1 > 0` and the Newton step :math:`-\gamma T^{-1} e_1` is inside, it is the
  solution (:math:`\lambda = 0`).
- Otherwise :math:`\lambda > \max(0, -\theta_1)` solves the secular equation
  :math:`1/\|h(\lambda)\| = 1/\Delta` by Newton's method started left of the root, where it
  converges monotonically; each step is two solves with the :math:`LDL^T` factorization of
  :math:`T + \lambda I` (LAPACK ``pttrf``/``pttrs``, :math:`O(k)`):

  .. math::  \lambda^+ = \lambda + \frac{\|h\|^2}{h^T (T + \lambda I)^{-1} h}\,
      \frac{\|h\| - \Delta}{\Delta} .

- Hard case: when :math:`\|h\| < \Delta` already next to :math:`-\theta_1` (the right-hand
  side has no component along :math:`v_1`, as happens when :math:`v_1` lives in another
  block), :math:`h + \tau v_1` with :math:`\|h + \tau v_1\| = \Delta`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.linalg.lapack import dpttrf, dpttrs

from trustregion.core.steihaug import boundary_intersections

_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True, eq=False)
class TridiagonalSolution:
    """``h`` minimizes the model; ``lam`` is the multiplier (0 inside the region)."""

    h: np.ndarray
    lam: float
    interior: bool
    hard_case: bool


def _solve_shifted(
    diag: np.ndarray, off: np.ndarray, lam: float, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(h, d, e)``: the solution of ``(T + lam I) h = rhs`` and the LDL^T factors, or None
    when ``T + lam I`` is not numerically positive definite."""
    if diag.shape[0] == 1:  # LAPACK's wrappers want a non-empty off-diagonal
        d = diag + lam
        if not d[0] > 0.0:
            return None
        return rhs[:, 0] / d, d, off
    d, e, info = dpttrf(diag + lam, off)
    if info != 0:
        return None
    h, info = dpttrs(d, e, rhs)
    if info != 0 or not np.all(np.isfinite(h)):
        return None
    return h[:, 0], d, e


def _resolve(d: np.ndarray, e: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve with the factors of :func:`_solve_shifted` again."""
    if d.shape[0] == 1:
        return b / d
    x, _ = dpttrs(d, e, b[:, None])
    return x[:, 0]


def tridiagonal_subproblem(
    diag: np.ndarray,
    off: np.ndarray,
    gamma: float,
    radius: float,
    *,
    rtol: float = 1e-10,
    maxiter: int = 100,
) -> TridiagonalSolution:
    r"""Minimize :math:`\gamma h_1 + \tfrac12 h^T T h` over :math:`\|h\| \le \Delta`.

    Parameters
    ----------
    diag, off : ndarray
        Diagonal (k,) and off-diagonal (k - 1,) of :math:`T`.
    gamma : float
        The first component of the gradient (the others are zero).
    radius : float
        :math:`\Delta > 0`.
    rtol : float
        Relative tolerance on :math:`\|h\| = \Delta` on the boundary.
    maxiter : int
        Newton iterations at most.

    Examples
    --------
    An indefinite ``T`` whose smallest eigenvector is orthogonal to ``e_1`` (the hard case):

    >>> import numpy as np
    >>> sol = tridiagonal_subproblem(np.array([1.0, -2.0]), np.array([0.0]), 1.0, 2.0)
    >>> sol.hard_case, sol.lam, bool(np.isclose(np.linalg.norm(sol.h), 2.0))
    (True, 2.0, True)
    """
    k = diag.shape[0]
    rhs = np.zeros((k, 1))
    rhs[0, 0] = -gamma
    theta, vectors = eigh_tridiagonal(
        diag, off, select="i", select_range=(0, 0), check_finite=False
    )
    theta_min = float(theta[0])
    if theta_min > 0.0:
        solved = _solve_shifted(diag, off, 0.0, rhs)
        if solved is not None and float(np.linalg.norm(solved[0])) <= radius:
            return TridiagonalSolution(solved[0], 0.0, True, False)
    lam_low = max(0.0, -theta_min)
    scale = max(
        float(np.max(np.abs(diag))), float(np.max(np.abs(off), initial=0.0)), abs(gamma) / radius
    )
    # Start just right of the pole: there ||h|| > radius unless this is the hard case.
    shift = max(1e3 * _EPS * scale, 1e-300)
    lam = lam_low + shift
    solved = _solve_shifted(diag, off, lam, rhs)
    while solved is None:  # rounding: T + lam I not yet positive definite
        shift *= 10.0
        lam = lam_low + shift
        solved = _solve_shifted(diag, off, lam, rhs)
    h, d, e = solved
    h_norm = float(np.linalg.norm(h))
    if h_norm < radius:
        # Hard case: even at the pole h stays inside. Complete it along v1 to the boundary;
        # both roots give the same model value when h is orthogonal to v1, take the better.
        v1 = vectors[:, 0]
        ta, tb = boundary_intersections(h, v1, radius)
        candidates = [h + ta * v1, h + tb * v1]
        values = [gamma * c[0] + 0.5 * _quadratic(diag, off, c) for c in candidates]
        best = candidates[int(np.argmin(values))]
        return TridiagonalSolution(best, lam_low, False, True)
    for _ in range(maxiter):
        if abs(h_norm - radius) <= rtol * radius:
            break
        curvature = float(h @ _resolve(d, e, h))
        lam_new = lam + (h_norm * h_norm / curvature) * (h_norm - radius) / radius
        if not lam_new > lam_low:  # only from the right of the root; halve the gap instead
            lam_new = lam_low + 0.5 * (lam - lam_low)
        solved = _solve_shifted(diag, off, lam_new, rhs)
        if solved is None:
            break
        lam = lam_new
        h, d, e = solved
        h_norm = float(np.linalg.norm(h))
    # rescale onto the boundary: removes the last rounding of ||h|| without moving lambda
    h = h * (radius / h_norm)
    return TridiagonalSolution(h, lam, False, False)


def _quadratic(diag: np.ndarray, off: np.ndarray, h: np.ndarray) -> float:
    """:math:`h^T T h` for the tridiagonal ``T``."""
    return float(diag @ (h * h) + 2.0 * (off @ (h[:-1] * h[1:])))
