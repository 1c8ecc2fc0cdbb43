"""Generic solvers built from the core pieces.

- :func:`minimize`: unconstrained Newton-CG trust-region minimization, scipy-compatible.
- :func:`divergence_ascent`: maximization under a per-step divergence bound (repeated TRPO
  steps on any problem).
- :func:`cpo_step`: the closed-form step of Constrained Policy Optimization.
"""

from trustregion.solvers.ascent import AscentResult, AscentStatus, divergence_ascent
from trustregion.solvers.cpo import CPOStatus, CPOStepResult, cpo_step
from trustregion.solvers.minimize import MinimizeStatus, minimize

__all__ = [
    "AscentResult",
    "AscentStatus",
    "CPOStatus",
    "CPOStepResult",
    "MinimizeStatus",
    "cpo_step",
    "divergence_ascent",
    "minimize",
]
