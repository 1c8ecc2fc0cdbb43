r"""Trust-region subproblem solvers for :func:`trustregion.minimize`, one module per method.

The layout is scipy's: the outer loop (``minimize.py``, scipy's ``_trustregion.py``) only
sees a *local model* built at each accepted point, which proposes a step for a radius:

.. math::  p(\Delta) \approx \arg\min_{\|p\| \le \Delta}\; g^T p + \tfrac12 p^T H p .

- :mod:`.ncg`: Steihaug-Toint truncated CG (``trust-ncg``), matrix-free;
- :mod:`.krylov`: GLTR, the subproblem restricted to a Lanczos basis (``trust-krylov``),
  matrix-free, nearly exact, with the hard case;
- :mod:`.exact`: More-Sorensen on the dense Hessian (``trust-exact``);
- :mod:`.dogleg`: the dogleg path for a positive definite dense Hessian (``dogleg``);
- :mod:`.tridiagonal`: the subproblem with a symmetric tridiagonal matrix, used by GLTR.

A local model is created once per accepted point and asked again, with a smaller radius,
after a rejected step: the models keep what they computed (a factorization, a Krylov basis)
so that a retry costs no new Hessian product where the method allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trustregion.core.status import Status


@dataclass(frozen=True, eq=False)
class Step:
    """A proposed step and what the outer loop needs to judge it.

    Attributes
    ----------
    p : ndarray
        The step (``||p|| <= radius`` up to rounding, in the method's norm).
    hits_boundary : bool
        Whether ``p`` lies on the boundary (the loop only enlarges the region then).
    predicted_reduction : float
        :math:`m(0) - m(p) = -(g^T p + \tfrac12 p^T H p)`.
    stop : Status or None
        None for a usable step; otherwise why no step could be computed (``NON_FINITE``,
        ``INDEFINITE_PRECONDITIONER``, ``NEGATIVE_CURVATURE`` for dogleg), and the run ends.
    what : str
        For ``stop``: which user function failed, as the user named it.
    """

    p: np.ndarray
    hits_boundary: bool
    predicted_reduction: float
    stop: Status | None = None
    what: str = ""


class LocalModel(Protocol):
    """The quadratic model at one point: ``solve(radius)`` proposes a step."""

    def solve(self, radius: float) -> Step: ...


def failed(n: int, stop: Status, what: str = "") -> Step:
    """A step that ends the run: zero, predicting nothing."""
    return Step(np.zeros(n), False, 0.0, stop, what)
