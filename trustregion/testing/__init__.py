"""Property-testing tools for numeric code: hypothesis strategies and checks.

Strategies (need ``hypothesis``, an optional dependency: ``pip install
trustregion-toolkit[testing]``) draw small structured cases that carry their own oracle:
:func:`spd_matrices`, :func:`psd_matrices`, :func:`symmetric_indefinite`,
:func:`orthogonal_matrices`, :func:`linear_operators`, :func:`logits`, :func:`simplices`,
:func:`diag_gaussians`, :func:`categorical_pairs`, :func:`diag_gaussian_pairs`,
:func:`trust_region_problems`, :func:`line_search_problems`.

Checks (NumPy and SciPy only) raise an ``AssertionError`` naming the check, the direction
or seed, the error found, the tolerance and where the tolerance came from:
:func:`check_grad`, :func:`check_jvp_vjp`, :func:`check_hvp`, :func:`check_fvp`,
:func:`check_symmetric_operator`, :func:`check_kl`, :func:`check_cg_contract`,
:func:`check_steihaug_contract`, :func:`check_line_search_contract`, :func:`assert_close`.

``import trustregion`` never imports this module (nor hypothesis). The checks import
without hypothesis; the strategies raise an ``ImportError`` that says what to install.
See ``docs/testing.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

STRATEGIES = (
    "categorical_kl_reference",
    "categorical_pairs",
    "diag_gaussian_pairs",
    "diag_gaussians",
    "gaussian_kl_reference",
    "line_search_problems",
    "linear_operators",
    "logits",
    "orthogonal_matrices",
    "psd_matrices",
    "simplices",
    "spd_matrices",
    "symmetric_indefinite",
    "trust_region_problems",
)

__all__ = [
    "CheckReport",
    "Comparison",
    "DistributionPair",
    "GaussianCase",
    "LineSearchProblem",
    "LinearOperatorCase",
    "LogitsCase",
    "SimplexCase",
    "SymmetricMatrixCase",
    "TrustRegionProblem",
    "assert_close",
    "check_cg_contract",
    "check_fvp",
    "check_grad",
    "check_hvp",
    "check_jvp_vjp",
    "check_kl",
    "check_line_search_contract",
    "check_steihaug_contract",
    "check_symmetric_operator",
    *STRATEGIES,
]

# Everything loads on first use: the pytest plugin (trustregion.testing.pytest_plugin) is
# imported by every pytest run in an environment with this package, and must stay cheap.
_MODULES = {
    **dict.fromkeys(
        (
            "DistributionPair",
            "GaussianCase",
            "LineSearchProblem",
            "LinearOperatorCase",
            "LogitsCase",
            "SimplexCase",
            "SymmetricMatrixCase",
            "TrustRegionProblem",
        ),
        "_cases",
    ),
    **dict.fromkeys(
        ("check_cg_contract", "check_line_search_contract", "check_steihaug_contract"),
        "_contracts",
    ),
    **dict.fromkeys(("check_fvp", "check_grad", "check_hvp", "check_jvp_vjp"), "_derivatives"),
    **dict.fromkeys(("check_kl", "check_symmetric_operator"), "_operators"),
    **dict.fromkeys(("CheckReport", "Comparison", "assert_close"), "_report"),
    **dict.fromkeys(STRATEGIES, "_strategies"),
}

MISSING_HYPOTHESIS = (
    "trustregion.testing.{name} is a hypothesis strategy and needs the optional dependency "
    "hypothesis, which is not installed: pip install 'trustregion-toolkit[testing]' "
    "(or pip install 'hypothesis>=6.100'). The check_* functions work without it."
)


def __getattr__(name: str) -> Any:
    module_name = _MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'trustregion.testing' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"trustregion.testing.{module_name}")
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing != "hypothesis" and not missing.startswith("hypothesis."):
            raise
        raise ImportError(MISSING_HYPOTHESIS.format(name=name)) from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
