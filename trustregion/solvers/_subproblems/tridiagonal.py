r"""The trust-region subproblem with a symmetric tridiagonal matrix (Moré-Sorensen).

.. math::  \min_{\|h\| \le \Delta}\; \gamma\, h_1 + \tfrac12 h^T T h ,

:math:`T` symmetric tridiagonal (diagonal ``diag``, off-diagonal ``off``; a zero in ``off``
splits it into blocks). This is the subproblem GLTR solves in its Lanczos basis. The
solution satisfies :math:`(T + \lambda I) h = -\gamma e_1` with :math:`T + \lambda I \succeq
0`, :math:`\lambda \ge 0` and :math:`\lambda (\Delta - \|h\|) = 0` (Moré & Sorensen 1983).

- The smallest eigenvalue :math:`\theta_1` of :math:`T` comes from bisection on the Sturm
  count (the signs of the :math:`LDL^T` pivots of :math:`T - \theta I`).
- If :math:`\theta_1 > 0` and the Newton step :math:`-\gamma T^{-1} e_1` is inside, it is the
  solution (:math:`\lambda = 0`).
- Otherwise :math:`\lambda > \max(0, -\theta_1)` solves the secular equation
  :math:`1/\|h(\lambda)\| = 1/\Delta` by Newton's method started just right of the pole,
  left of the root, where it converges monotonically; each step is two solves with the
  :math:`LDL^T` factorization of :math:`T + \lambda I` (:math:`O(k)`):

  .. math::  \lambda^+ = \lambda + \frac{\|h\|^2}{h^T (T + \lambda I)^{-1} h}\,
      \frac{\|h\| - \Delta}{\Delta} .

- Hard case: when :math:`\|h\| < \Delta` already next to :math:`-\theta_1` (the right-hand
  side has no component along the eigenvector :math:`v_1`, as happens when :math:`v_1`
  lives in another block), :math:`h + \tau v_1` with :math:`\|h + \tau v_1\| = \Delta`,
  :math:`v_1` from LAPACK (``scipy.linalg.eigh_tridiagonal``, that pair only).

The iteration runs compiled (:mod:`trustregion.kernels.gltr`): it is called once or
more per Lanczos step on a few-dozen-element matrix, where wrapper overhead would dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from trustregion.core.steihaug import boundary_intersections
from trustregion.kernels.gltr import tridiagonal_trust_region


@dataclass(frozen=True, eq=False)
class TridiagonalSolution:
    """``h`` minimizes the model; ``lam`` is the multiplier (0 inside the region)."""

    h: np.ndarray
    lam: float
    interior: bool
    hard_case: bool
    theta_min: float


def tridiagonal_subproblem(
    diag: np.ndarray,
    off: np.ndarray,
    gamma: float,
    radius: float,
    *,
    rtol: float = 1e-10,
    maxiter: int = 100,
    lam_start: float = 0.0,
) -> TridiagonalSolution:
    r"""Minimize :math:`\gamma h_1 + \tfrac12 h^T T h` over :math:`\|h\| \le \Delta`.

    Parameters
    ----------
    diag, off : ndarray
        Diagonal (k,) and off-diagonal (k - 1,) of :math:`T`, float64, finite.
    gamma : float
        The first component of the gradient (the others are zero).
    radius : float
        :math:`\Delta > 0`.
    rtol : float
        Relative tolerance on :math:`\|h\| = \Delta` on the boundary.
    maxiter : int
        Newton iterations at most.
    lam_start : float
        A guess of the multiplier on the boundary (the previous one when ``T`` grows by a
        row); 0 for none.

    Returns
    -------
    TridiagonalSolution
        ``h``, the multiplier ``lam``, whether ``h`` is inside, whether this was the hard
        case, and the smallest eigenvalue ``theta_min`` of :math:`T`.

    Examples
    --------
    An indefinite ``T`` whose smallest eigenvector is orthogonal to ``e_1`` (the hard case):

    >>> import numpy as np
    >>> sol = tridiagonal_subproblem(np.array([1.0, -2.0]), np.array([0.0]), 1.0, 2.0)
    >>> sol.hard_case, sol.lam, bool(np.isclose(np.linalg.norm(sol.h), 2.0))
    (True, 2.0, True)
    """
    diag = np.ascontiguousarray(diag, dtype=np.float64)
    off = np.ascontiguousarray(off, dtype=np.float64)
    h = np.empty(diag.shape[0])
    case, lam, theta = tridiagonal_trust_region(
        diag, off, gamma, radius, rtol, maxiter, h, lam_start
    )
    if case == 0:
        return TridiagonalSolution(h, 0.0, True, False, theta)
    if case == 1:
        return TridiagonalSolution(h, lam, False, False, theta)
    # The hard case: even at the pole h stays inside. Complete it to the boundary along the
    # eigenvector v1 of theta (LAPACK, this rare path only); both roots give the same model
    # value when h is orthogonal to v1, take the better one in rounding.
    _, vectors = eigh_tridiagonal(diag, off, select="i", select_range=(0, 0), check_finite=False)
    v1 = vectors[:, 0]
    ta, tb = boundary_intersections(h, v1, radius)
    candidates = [h + ta * v1, h + tb * v1]
    values = [gamma * c[0] + 0.5 * _quadratic(diag, off, c) for c in candidates]
    best = candidates[int(np.argmin(values))]
    return TridiagonalSolution(best, lam, False, True, theta)


def _quadratic(diag: np.ndarray, off: np.ndarray, h: np.ndarray) -> float:
    """:math:`h^T T h` for the tridiagonal ``T``."""
    return float(diag @ (h * h) + 2.0 * (off @ (h[:-1] * h[1:])))
