"""trustregion: matrix-free trust-region optimization on a plain CPU.

Layers (dependencies point downwards only):

- ``trustregion.kernels``       Numba-jitted distribution kernels (no validation).
- ``trustregion.distributions`` validated Python API over the kernels.
- ``trustregion.core``          CG, Steihaug CG, step scaling, KL-constrained line search.
- ``trustregion.solvers``       generic solvers built from the core pieces.

The core never imports ``rl_adapters``, Gymnasium or a deep-learning framework.
"""

from trustregion.core import (
    CGResult,
    CGStatus,
    LineSearchResult,
    LineSearchStatus,
    NaturalStepResult,
    ScaledStep,
    SteihaugResult,
    SteihaugStatus,
    StepStatus,
    backtracking_line_search,
    cg,
    natural_gradient_step,
    scale_step,
    steihaug_cg,
)

__version__ = "0.1.0"

__all__ = [
    "CGResult",
    "CGStatus",
    "LineSearchResult",
    "LineSearchStatus",
    "NaturalStepResult",
    "ScaledStep",
    "SteihaugResult",
    "SteihaugStatus",
    "StepStatus",
    "__version__",
    "backtracking_line_search",
    "cg",
    "natural_gradient_step",
    "scale_step",
    "steihaug_cg",
]
