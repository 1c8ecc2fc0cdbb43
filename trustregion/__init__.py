"""trustregion: matrix-free trust-region optimization on a plain CPU.

Layers (dependencies point downwards only):

- ``trustregion.kernels``       Numba-jitted distribution kernels (no validation).
- ``trustregion.distributions`` validated Python API over the kernels.
- ``trustregion.core``          CG, Steihaug CG, step scaling, KL-constrained line search.
- ``trustregion.solvers``       generic solvers built from the core pieces.

The core never imports ``rl_adapters``, Gymnasium or a deep-learning framework.
"""

from trustregion import distributions
from trustregion.core import (
    CGResult,
    LineSearchResult,
    NaturalStepResult,
    ScaledStep,
    Status,
    SteihaugResult,
    backtracking_line_search,
    cg,
    natural_gradient_step,
    scale_step,
    steihaug_cg,
)
from trustregion.solvers import (
    SCIPY_STATUS_CODES,
    AscentResult,
    CPOStepResult,
    cpo_step,
    divergence_ascent,
    minimize,
)

__version__ = "0.1.0"

__all__ = [
    "SCIPY_STATUS_CODES",
    "AscentResult",
    "CGResult",
    "CPOStepResult",
    "LineSearchResult",
    "NaturalStepResult",
    "ScaledStep",
    "Status",
    "SteihaugResult",
    "__version__",
    "backtracking_line_search",
    "cg",
    "cpo_step",
    "distributions",
    "divergence_ascent",
    "minimize",
    "natural_gradient_step",
    "scale_step",
    "steihaug_cg",
]
