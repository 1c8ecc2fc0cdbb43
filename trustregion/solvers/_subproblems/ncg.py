r"""``trust-ncg``: Steihaug-Toint truncated CG on the model (scipy's ``_trustregion_ncg.py``).

The subproblem solver is :func:`trustregion.steihaug_cg`; this module only adapts it to the
outer loop. A retry with a smaller radius runs CG again (CG cannot reuse its iterates for a
smaller region without storing them; ``trust-krylov`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trustregion.core.status import Status
from trustregion.core.steihaug import steihaug_cg
from trustregion.solvers._subproblems import Step, failed


class SteihaugModel:
    """The model at one point, solved by truncated (optionally preconditioned) CG."""

    def __init__(
        self,
        hessp: Callable[[np.ndarray], np.ndarray],
        g: np.ndarray,
        *,
        rtol: float | None,
        maxiter: int,
        M: Any = None,
    ) -> None:
        self.hessp, self.g, self.rtol, self.maxiter, self.M = hessp, g, rtol, maxiter, M

    def solve(self, radius: float) -> Step:
        sub = steihaug_cg(
            self.hessp, self.g, radius, rtol=self.rtol, maxiter=self.maxiter, M=self.M
        )
        if sub.status is Status.NON_FINITE:
            return failed(self.g.shape[0], Status.NON_FINITE, "hessp/hess or the preconditioner")
        if sub.status is Status.INDEFINITE_PRECONDITIONER:
            return failed(self.g.shape[0], Status.INDEFINITE_PRECONDITIONER)
        return Step(sub.p, sub.hits_boundary, sub.predicted_reduction)
