r"""``dogleg``: the dogleg path for a positive definite Hessian (scipy's ``_trustregion_dogleg``).

With the Newton point :math:`p_N = -H^{-1} g` (Cholesky) and the Cauchy point
:math:`p_C = -\frac{g^Tg}{g^T H g}\, g`, the step is (Nocedal & Wright, section 4.1)

.. math::

    p = \begin{cases} p_N & \|p_N\| < \Delta \\
    \Delta\, p_C / \|p_C\| & \|p_C\| \ge \Delta \\
    p_C + \tau (p_N - p_C),\ \tau \in [0, 1],\ \|p\| = \Delta & \text{otherwise.} \end{cases}

:math:`H` must be positive definite: a failed Cholesky factorization ends the run with
``NEGATIVE_CURVATURE`` (scipy's status 3, "A linalg error occurred, such as a non-psd
Hessian."), as scipy does. The factorization and both points are computed once per point and
reused after a rejected step.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import get_lapack_funcs

from trustregion.core.status import Status
from trustregion.core.steihaug import boundary_intersections
from trustregion.solvers._subproblems import Step, failed


class DoglegModel:
    """The model at one point with a dense positive definite Hessian ``H``."""

    def __init__(self, H: np.ndarray, g: np.ndarray) -> None:
        self.H, self.g = H, g
        self._newton: np.ndarray | None = None
        self._cauchy: np.ndarray | None = None
        self._indefinite = False

    def _reduction(self, p: np.ndarray) -> float:
        return -float(self.g @ p + 0.5 * (p @ (self.H @ p)))

    def solve(self, radius: float) -> Step:
        n = self.g.shape[0]
        if self._newton is None and not self._indefinite:
            # LAPACK directly: scipy.linalg's cho_factor/cho_solve wrappers cost ~15x the
            # factorization itself at these sizes
            potrf, potrs = get_lapack_funcs(("potrf", "potrs"), (self.H,))
            U, info = potrf(self.H, lower=False, clean=True)
            if info != 0:
                self._indefinite = True
            else:
                newton, _ = potrs(U, self.g, lower=False)
                self._newton = -newton
        if self._indefinite or self._newton is None:
            return failed(n, Status.NEGATIVE_CURVATURE, "hess")
        newton = self._newton
        if float(np.linalg.norm(newton)) < radius:
            return Step(newton, False, self._reduction(newton))
        if self._cauchy is None:
            g = self.g
            self._cauchy = -(float(g @ g) / float(g @ (self.H @ g))) * g
        cauchy = self._cauchy
        cauchy_norm = float(np.linalg.norm(cauchy))
        if cauchy_norm >= radius:
            p = cauchy * (radius / cauchy_norm)
        else:
            _, tau = boundary_intersections(cauchy, newton - cauchy, radius)
            p = cauchy + tau * (newton - cauchy)
        return Step(p, True, self._reduction(p))
