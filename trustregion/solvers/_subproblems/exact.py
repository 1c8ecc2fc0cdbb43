r"""``trust-exact``: the subproblem solved nearly exactly on the dense Hessian (More-Sorensen).

The solution of :math:`\min_{\|p\| \le \Delta} g^Tp + \tfrac12 p^THp` is characterized by
(Moré & Sorensen 1983; Conn, Gould & Toint, *Trust-Region Methods*, section 7.3)

.. math::

    (H + \lambda I)\, p = -g, \qquad H + \lambda I \succeq 0, \qquad
    \lambda \ge 0, \qquad \lambda\,(\Delta - \|p\|) = 0 .

The multiplier :math:`\lambda` is found by safeguarded Newton iterations on the secular
equation :math:`1/\|p(\lambda)\| = 1/\Delta`, each one a Cholesky factorization
:math:`H + \lambda I = U^TU` (LAPACK ``potrf``, whose partial factor on failure gives a
better lower bound on :math:`\lambda`):

.. math::  \lambda^+ = \lambda + \Bigl(\frac{\|p\|}{\|w\|}\Bigr)^2 \frac{\|p\| - \Delta}{\Delta},
    \qquad U^T w = p .

In the *hard case* (:math:`g` orthogonal to the eigenvectors of the smallest eigenvalue
:math:`\lambda_1 < 0`, and :math:`\|(H - \lambda_1 I)^+ g\| < \Delta`) the secular equation
has no root above :math:`-\lambda_1`; the step is completed to the boundary along an
approximate eigenvector :math:`z` of the smallest singular value of :math:`U` (LINPACK's
condition estimator, Cline, Moler, Stewart & Wilkinson 1979): :math:`p + \tau z` with
:math:`\|p + \tau z\| = \Delta` and the :math:`\tau` of smaller magnitude.

Iterations stop when :math:`|\|p\| - \Delta| \le \kappa_{easy} \Delta` on the boundary, or
when the completion to the boundary changes the model by at most :math:`\kappa_{hard}` of its
curvature term (Conn, Gould & Toint, section 7.3.8; :math:`\kappa_{easy} = 0.1`,
:math:`\kappa_{hard} = 0.2`, at most ``maxiter`` = 25 factorizations per solve). These are the
decisions of scipy's ``trust-exact``, so both take the same steps; the Hessian, its bounds and
the multiplier interval are kept between solves at the same point.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import get_lapack_funcs

from trustregion.core.steihaug import boundary_intersections
from trustregion.solvers._subproblems import Step

_EPS = float(np.finfo(float).eps)


def smallest_singular_value(U: np.ndarray) -> tuple[float, np.ndarray]:
    r"""Estimate of the smallest singular value of the upper triangular ``U`` and its right
    singular vector, in :math:`O(n^2)`.

    Chooses :math:`e \in \{\pm1\}^n` greedily so that :math:`U^T w = e` has a large solution
    (Golub & Van Loan, *Matrix Computations*, 4th ed., Algorithm 3.5.1), then solves
    :math:`U v = w`: :math:`\sigma_{\min} \approx \|w\| / \|v\|`, :math:`z = v / \|v\|`.
    """
    n = U.shape[0]
    partial = np.zeros(n)  # U[:k, k:]^T w[:k], accumulated column by column
    w = np.empty(n)
    for k in range(n):
        diagonal = U[k, k]
        w_plus = (1.0 - partial[k]) / diagonal
        w_minus = (-1.0 - partial[k]) / diagonal
        row = U[k, k + 1 :]
        p_plus = partial[k + 1 :] + row * w_plus
        p_minus = partial[k + 1 :] + row * w_minus
        if abs(w_plus) + np.abs(p_plus).sum() >= abs(w_minus) + np.abs(p_minus).sum():
            w[k] = w_plus
            partial[k + 1 :] = p_plus
        else:
            w[k] = w_minus
            partial[k + 1 :] = p_minus
    (trtrs,) = get_lapack_funcs(("trtrs",), (U,))
    v, _ = trtrs(U, w, lower=0, trans=0)
    v_norm = float(np.linalg.norm(v))
    return float(np.linalg.norm(w)) / v_norm, v / v_norm


class ExactModel:
    """The model at one point with a dense symmetric Hessian ``H`` (float64, finite)."""

    # theta of Conn, Gould & Toint (7.3.14): where a new lambda falls in its interval
    UPDATE_COEFF = 0.01

    def __init__(
        self,
        H: np.ndarray,
        g: np.ndarray,
        *,
        maxiter: int = 25,
        k_easy: float = 0.1,
        k_hard: float = 0.2,
    ) -> None:
        self.H, self.g = H, g
        self.n = g.shape[0]
        self.g_norm = float(np.linalg.norm(g))
        self.maxiter, self.k_easy, self.k_hard = maxiter, k_easy, k_hard
        # LAPACK directly: scipy.linalg's wrappers cost more than the work at these sizes
        self._potrf, self._potrs, self._trtrs = get_lapack_funcs(("potrf", "potrs", "trtrs"), (H,))
        diagonal = np.diag(H)
        off_diagonal = np.abs(H).sum(axis=1) - np.abs(diagonal)
        self.gershgorin_lower = float(np.min(diagonal - off_diagonal))
        self.gershgorin_upper = float(np.max(diagonal + off_diagonal))
        self.min_diagonal = float(np.min(diagonal))
        self.norm_inf = float(np.abs(H).sum(axis=1).max())
        self.norm_fro = float(np.linalg.norm(H))
        # below this, a gradient is zero for backward substitution (Golub & Van Loan, p. 165)
        self.close_to_zero = self.n * _EPS * self.norm_inf
        self.previous_radius = -1.0
        self.lambda_lower = 0.0
        self.nfactor = 0

    def _cholesky(self, lam: float) -> tuple[np.ndarray, int, np.ndarray]:
        shifted = self.H + lam * np.eye(self.n)
        U, info = self._potrf(shifted, lower=False, overwrite_a=False, clean=True)
        self.nfactor += 1
        return U, int(info), shifted

    def _interval(self, radius: float) -> tuple[float, float, float]:
        """Initial lambda and its bounds (Conn, Gould & Toint, section 7.3.8)."""
        upper = max(
            0.0,
            self.g_norm / radius + min(-self.gershgorin_lower, self.norm_fro, self.norm_inf),
        )
        lower = max(
            0.0,
            -self.min_diagonal,
            self.g_norm / radius - min(self.gershgorin_upper, self.norm_fro, self.norm_inf),
        )
        if radius < self.previous_radius:  # a smaller region needs a larger lambda
            lower = max(self.lambda_lower, lower)
        if lower == 0.0:
            return 0.0, lower, upper
        return (
            max(np.sqrt(lower * upper), lower + self.UPDATE_COEFF * (upper - lower)),
            lower,
            upper,
        )

    def _between(self, lower: float, upper: float) -> float:
        return max(np.sqrt(abs(lower * upper)), lower + self.UPDATE_COEFF * (upper - lower))

    def solve(self, radius: float) -> Step:
        lam, lower, upper = self._interval(radius)
        n = self.n
        p = np.zeros(n)
        hits_boundary = True
        factored: tuple[np.ndarray, int, np.ndarray] | None = None
        for _ in range(self.maxiter):
            U, info, shifted = factored if factored is not None else self._cholesky(lam)
            factored = None
            if info == 0 and self.g_norm > self.close_to_zero:
                p, _ = self._potrs(U, -self.g, lower=False)
                p_norm = float(np.linalg.norm(p))
                if p_norm <= radius and lam == 0.0:  # the Newton step, inside
                    hits_boundary = False
                    break
                w, _ = self._trtrs(U, p, lower=0, trans=1)
                w_norm = float(np.linalg.norm(w))
                lam_newton = lam + (p_norm / w_norm) ** 2 * (p_norm - radius) / radius
                if p_norm < radius:  # inside with lambda > 0: possibly the hard case
                    s_min, z_min = smallest_singular_value(U)
                    ta, tb = boundary_intersections(p, z_min, radius)
                    tau = ta if abs(ta) <= abs(tb) else tb
                    curvature = float(p @ (shifted @ p))
                    if tau**2 * s_min**2 <= self.k_hard * (curvature + lam * radius**2):
                        p = p + tau * z_min
                        break
                    upper = lam
                    lower = max(lower, lam - s_min**2)
                    U_new, info_new, shifted_new = self._cholesky(lam_newton)
                    if info_new == 0:
                        lam = lam_newton
                        factored = (U_new, info_new, shifted_new)
                    else:
                        lower = max(lower, lam_newton)
                        lam = self._between(lower, upper)
                else:  # outside: lambda is too small
                    if abs(p_norm - radius) / radius <= self.k_easy:
                        break
                    lower = lam
                    lam = lam_newton
            elif info == 0:  # a (numerically) zero gradient: step along z only
                if lam == 0.0:
                    p = np.zeros(n)
                    hits_boundary = False
                    break
                s_min, z_min = smallest_singular_value(U)
                p = radius * z_min
                if radius**2 * s_min**2 <= self.k_hard * lam * radius**2:
                    break
                upper = lam
                lower = max(lower, lam - s_min**2)
                lam = self._between(lower, upper)
            else:  # H + lambda I is not positive definite: raise the lower bound
                k = info  # the leading k x k block is the first that is not
                delta = float(np.sum(U[: k - 1, k - 1] ** 2)) - shifted[k - 1, k - 1]
                v = np.zeros(n)
                v[k - 1] = 1.0
                if k > 1:
                    v[: k - 1], _ = self._trtrs(
                        U[: k - 1, : k - 1], -U[: k - 1, k - 1], lower=0, trans=0
                    )
                lower = max(lower, lam + delta / float(v @ v))
                lam = self._between(lower, upper)
        self.lambda_lower = lower
        self.previous_radius = radius
        predicted = -float(self.g @ p + 0.5 * (p @ (self.H @ p)))
        return Step(p, hits_boundary, predicted)
