"""The case objects the strategies draw: the data and the oracle that goes with it.

Plain NumPy; no hypothesis import, so cases can be built and pickled anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class SymmetricMatrixCase:
    r"""A symmetric matrix :math:`A = Q \operatorname{diag}(\lambda) Q^T` with its eigenpairs.

    Attributes
    ----------
    matrix : ndarray, shape (n, n)
        In the requested dtype (assembled in float64, rounded once).
    eigenvalues : ndarray, shape (n,)
        Ascending, float64: the oracle the matrix was built from.
    eigenvectors : ndarray, shape (n, n)
        Orthonormal columns ``Q`` (float64), ``matrix @ Q[:, i] ~ eigenvalues[i] Q[:, i]``.
    """

    matrix: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def cond(self) -> float:
        """``max |lambda| / min |lambda|`` over the eigenvalues (inf when one is 0)."""
        mags = np.abs(self.eigenvalues)
        low = float(mags.min())
        return float(mags.max()) / low if low > 0 else float("inf")


@dataclass(frozen=True, eq=False)
class LinearOperatorCase:
    """An operator in one of three forms, with the dense matrix as its oracle.

    Attributes
    ----------
    operator : callable, scipy LinearOperator or ndarray
        What a solver under test receives (``form``).
    matrix : ndarray, shape (n, n)
        The dense matrix the operator applies.
    kind : str
        ``"spd"``, ``"psd"``, ``"indefinite"`` or ``"nonsymmetric"``.
    form : str
        ``"callable"``, ``"linear_operator"`` or ``"array"``.
    spectrum : ndarray
        Eigenvalues (ascending) for the symmetric kinds, singular values otherwise.
    """

    operator: Any
    matrix: np.ndarray
    kind: str
    form: str
    spectrum: np.ndarray


@dataclass(frozen=True, eq=False)
class LogitsCase:
    """A batch of logits with reference log-probabilities (float64, from scipy).

    Attributes
    ----------
    logits : ndarray, shape (batch, k)
        Finite values or ``-inf`` (masked), at least one finite entry per row.
    log_probs, probs : ndarray, shape (batch, k), float64
        ``scipy.special.log_softmax`` of the stored logits, and its exponential.
    """

    logits: np.ndarray
    log_probs: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True, eq=False)
class SimplexCase:
    """A probability vector: nonnegative, summing to 1 (float64), with its logs.

    Attributes
    ----------
    probs : ndarray, shape (k,)
    log_probs : ndarray, shape (k,)
        ``log(probs)``, ``-inf`` where a probability is 0.
    """

    probs: np.ndarray
    log_probs: np.ndarray


@dataclass(frozen=True, eq=False)
class GaussianCase:
    """A batch of diagonal Gaussians.

    Attributes
    ----------
    mean : ndarray, shape (batch, d)
    log_std : ndarray, shape (batch, d), or (d,) when shared by the rows
    std : ndarray
        ``exp(log_std)`` in float64.
    """

    mean: np.ndarray
    log_std: np.ndarray
    std: np.ndarray


@dataclass(frozen=True, eq=False)
class DistributionPair:
    """Two batches of distributions and the KL between them, row by row.

    Attributes
    ----------
    p, q : ndarray or tuple of ndarrays
        Logits ``(batch, k)`` for categoricals, ``(mean, log_std)`` for Gaussians.
    kl : ndarray, shape (batch,), float64
        :math:`\\mathrm{KL}(p_i \\| q_i)` from the closed form in float64.
    relation : str
        ``"equal"``, ``"near"`` or ``"far"``.
    """

    p: Any
    q: Any
    kl: np.ndarray
    relation: str


@dataclass(frozen=True, eq=False)
class TrustRegionProblem:
    r"""A trust-region subproblem :math:`\min_{\|p\| \le \Delta} g^Tp + \tfrac12 p^THp`, solved.

    Built in the eigenbasis of ``H``, so the solution is exact up to the rounding of
    one change of basis.

    Attributes
    ----------
    g : ndarray, shape (n,)
    H : ndarray, shape (n, n)
    radius : float
    solution : ndarray, shape (n,), float64
        A global minimizer (in the hard case the other one is its mirror image along the
        eigenvector of the smallest eigenvalue).
    multiplier : float
        :math:`\mu \ge 0` with :math:`(H + \mu I) p = -g`, :math:`H + \mu I \succeq 0`,
        :math:`\mu (\|p\| - \Delta) = 0`.
    model_value : float
        The optimal value :math:`m(p^*)`.
    regime : str
        ``"interior"``, ``"boundary"``, ``"negative_curvature"`` or ``"hard_case"``.
    eigenvalues, eigenvectors : ndarray
        Of ``H`` (ascending, float64).
    """

    g: np.ndarray
    H: np.ndarray
    radius: float
    solution: np.ndarray
    multiplier: float
    model_value: float
    regime: str
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    def model(self, p: Any) -> float:
        """:math:`m(p) = g^Tp + \\tfrac12 p^THp` in float64."""
        p = np.asarray(p, dtype=np.float64)
        g = self.g.astype(np.float64)
        return float(g @ p + 0.5 * p @ self.H.astype(np.float64) @ p)


@dataclass(frozen=True, eq=False)
class LineSearchProblem:
    r"""A backtracking line search whose first acceptable trial is known.

    Along :math:`x = x_0 + t s` the objective is :math:`f_0 + a\,t\,(t_f - t)` (improving for
    :math:`0 < t < t_f`) and the constraint is :math:`c_{\max} (t / t_c)^2` (feasible for
    :math:`t \le t_c`); trials listed in ``non_finite_trials`` return NaN. No trial fraction
    :math:`\rho^k` lies within a relative :math:`10^{-6}` of :math:`t_f` or :math:`t_c`.

    Attributes
    ----------
    evaluate : callable
        ``evaluate(x) -> (objective, constraint)``.
    x0, full_step : ndarray
    expected_improvement : float
        The linear model's improvement for the full step, :math:`a\,t_f`.
    max_constraint, shrink : float
    max_backtracks : int
    first_acceptable : int or None
        Index ``k`` of the first acceptable trial, None when none is.
    improvement_limit, constraint_limit : float
        :math:`t_f` and :math:`t_c`.
    non_finite_trials : tuple of int
    """

    evaluate: Callable[[np.ndarray], tuple[float, float]]
    x0: np.ndarray
    full_step: np.ndarray
    expected_improvement: float
    max_constraint: float
    shrink: float
    max_backtracks: int
    first_acceptable: int | None
    improvement_limit: float
    constraint_limit: float
    non_finite_trials: tuple[int, ...] = field(default=())
