"""The matrix-free core: CG, Steihaug CG, step scaling and a constrained line search.

Each piece does one thing and is combined by the caller (see ``natural_gradient_step``
for the composition TRPO uses).
"""

from trustregion.core.cg import CGResult, cg
from trustregion.core.line_search import (
    LineSearchResult,
    backtracking_line_search,
)
from trustregion.core.status import Status
from trustregion.core.steihaug import SteihaugResult, steihaug_cg
from trustregion.core.step import (
    NaturalStepResult,
    ScaledStep,
    natural_gradient_step,
    scale_step,
)

__all__ = [
    "CGResult",
    "LineSearchResult",
    "NaturalStepResult",
    "ScaledStep",
    "Status",
    "SteihaugResult",
    "backtracking_line_search",
    "cg",
    "natural_gradient_step",
    "scale_step",
    "steihaug_cg",
]
