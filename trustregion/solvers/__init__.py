"""Generic solvers built from the core pieces.

- :func:`minimize`: unconstrained Newton-CG trust-region minimization, scipy-compatible.
- :func:`divergence_ascent`: maximization under a per-step divergence bound (repeated TRPO
  steps on any problem).
- :func:`cpo_step`: the closed-form step of Constrained Policy Optimization.
"""

from trustregion.solvers.ascent import AscentResult, divergence_ascent
from trustregion.solvers.cpo import CPOStepResult, cpo_step
from trustregion.solvers.minimize import SCIPY_STATUS_CODES, minimize

__all__ = [
    "SCIPY_STATUS_CODES",
    "AscentResult",
    "CPOStepResult",
    "cpo_step",
    "divergence_ascent",
    "minimize",
]
