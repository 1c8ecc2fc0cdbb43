r"""Backtracking line search under a constraint (TRPO's KL-constrained search).

The quadratic model behind a trust-region step is only a model: the full step
:math:`s` may break the true constraint (the KL divergence between old and new
policy) or fail to improve the true objective (the surrogate advantage). The
search tries :math:`x_0 + \rho^k s` for :math:`k = 0, 1, \dots, K` and accepts the
first trial that improves the objective and keeps the constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core.status import Status, render

# What the line search measured, per status; render() appends the remedy. When no trial is
# accepted, the status names why the *last* trial was rejected.
_WHAT_HAPPENED = {
    Status.ACCEPTED: "accepted step fraction {frac:.4g} after {nb} backtracks",
    Status.NO_IMPROVEMENT: (
        "no trial improved the objective in {nt} trials; parameters left at x0"
    ),
    Status.CONSTRAINT_VIOLATED: (
        "every trial broke the constraint bound {bound:.4g} in {nt} trials; parameters left "
        "at x0"
    ),
    Status.NON_FINITE: (
        "evaluate returned a non-finite objective or constraint at the last of {nt} trials; "
        "parameters left at x0"
    ),
}


@dataclass(frozen=True, eq=False)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes
    ----------
    x : ndarray
        The accepted point, or ``x0`` itself when nothing was accepted.
    accepted : bool
    step_fraction : float
        :math:`\\rho^k` of the accepted trial; 0.0 when nothing was accepted.
    n_backtracks : int
        Number of shrinks before acceptance (``k``), or of trials minus one when rejected.
    fractions, objectives, constraints : ndarray
        Every trial's step fraction, objective and constraint value, in order.
    objective : float
        The objective at the returned ``x`` (``f0`` when rejected).
    constraint : float
        The constraint at the returned ``x`` (0.0 when rejected: ``x0`` is the reference).
    f0 : float
        The baseline objective at ``x0``.
    status : Status
        ``ACCEPTED``, or why the last trial was rejected: ``NO_IMPROVEMENT``,
        ``CONSTRAINT_VIOLATED`` or ``NON_FINITE``.
    message : str
        What happened and what to try.
    """

    x: np.ndarray
    accepted: bool
    step_fraction: float
    n_backtracks: int
    fractions: np.ndarray
    objectives: np.ndarray
    constraints: np.ndarray
    objective: float
    constraint: float
    f0: float
    status: Status
    message: str

    @property
    def success(self) -> bool:
        """The same as ``accepted``, under the name every other result uses."""
        return self.accepted


_EPS = float(np.finfo(np.float64).eps)
# expected_improvement in [-_IMPROVEMENT_ROUNDING max(1, |f0|), 0) is rounding of g^T s
_IMPROVEMENT_ROUNDING = 1000 * _EPS


def _real(name: str, value: Any) -> float:
    """``value`` as a finite float (sign checked by the caller), or raise."""
    out = v.real_number(name, value)
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return out


def _evaluate(evaluate: Callable[[np.ndarray], Any], x: np.ndarray) -> tuple[float, float]:
    """Call ``evaluate`` and return its two values as floats (possibly non-finite)."""
    value = evaluate(x)
    try:
        objective, constraint = value
    except (TypeError, ValueError):
        raise TypeError(f"evaluate must return (objective, constraint), got {value!r}") from None
    try:
        return v.real_number("", objective), v.real_number("", constraint)
    except TypeError:
        raise TypeError(f"evaluate must return two real numbers, got {value!r}") from None


def backtracking_line_search(
    evaluate: Callable[[np.ndarray], tuple[float, float]],
    x0: Any,
    full_step: Any,
    *,
    expected_improvement: float,
    max_constraint: float,
    shrink: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.0,
    constraint_slack: float = 1.0,
    f0: float | None = None,
    constraint_rtol: float = 32 * _EPS,
) -> LineSearchResult:
    r"""Backtrack along ``full_step`` until the objective improves within the constraint.

    Trial :math:`k = 0, \dots, K` evaluates :math:`x_k = x_0 + \rho^k s` and is accepted when,
    with :math:`(f_k, c_k) = \mathrm{evaluate}(x_k)`,

    .. math::

        f_k - f_0 > 0, \qquad
        f_k - f_0 \ge r\, \rho^k\, \hat{\imath} \;\; (\text{only if } r > 0), \qquad
        c_k \le \sigma\, c_{\max} (1 + \tau),

    all finite, where :math:`\hat\imath` is ``expected_improvement`` (the linear model's
    prediction for the full step), :math:`r` is ``accept_ratio`` and :math:`\sigma` is
    ``constraint_slack`` and :math:`\tau` is ``constraint_rtol``, 32 ulps by default, so that
    a step scaled exactly onto a quadratic constraint's boundary is not rejected by the
    rounding of :math:`c_k`. TRPO uses :math:`\rho = 0.8`, :math:`K = 10`, :math:`r = 0` (SB3) or
    :math:`r = 0.1` (the original paper's code), :math:`\sigma = 1` (or 1.5 as in OpenAI
    Baselines). A trial with NaN or inf is rejected, never accepted. If no trial is accepted,
    ``x0`` is returned unchanged with ``accepted=False``.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x) -> (objective, constraint)``; the objective is maximized. It must not
        rely on ``x`` staying alive after the call (trial arrays are fresh each time).
    x0 : array_like, shape (n,)
        Current point.
    full_step : array_like, shape (n,)
        The full step :math:`s` (e.g. from :func:`natural_gradient_step`).
    expected_improvement : float
        Predicted improvement for the full step, :math:`g^T s` (>= 0). A value slightly
        below zero from rounding (down to ``-1000 eps max(1, |f0|)``) counts as 0; a clearly
        negative one raises: the step is not an ascent direction.
    max_constraint : float
        Constraint bound :math:`c_{\max} > 0` (the KL bound :math:`\delta`).
    shrink : float
        :math:`\rho \in (0, 1)`.
    max_backtracks : int
        :math:`K \ge 0`; ``K + 1`` trials at most.
    accept_ratio : float
        :math:`r \ge 0`, minimal ratio of actual to expected improvement.
    constraint_slack : float
        :math:`\sigma > 0`.
    f0 : float, optional
        Objective at ``x0``; evaluated once if not given.
    constraint_rtol : float
        :math:`\tau \ge 0`, relative tolerance of the constraint test (default ``32 eps``, about
        7e-15: the rounding of a quadratic form in up to ~100 variables lands within 15 ulps of
        its exact value; a KL evaluated otherwise is not affected by so small a tolerance).

    Returns
    -------
    LineSearchResult

    Examples
    --------
    Maximize :math:`-\|x - 1\|^2` from 0 under :math:`\|x\|^2 \le 1`:

    >>> import numpy as np
    >>> f = lambda x: (-np.sum((x - 1.0) ** 2), np.sum(x ** 2))
    >>> res = backtracking_line_search(f, np.zeros(2), np.full(2, 2.0),
    ...                                expected_improvement=8.0, max_constraint=1.0)
    >>> res.accepted, res.n_backtracks, bool(res.constraint <= 1.0)
    (True, 5, True)
    """
    x0 = v.float_vector("x0", x0)
    full_step = v.float_vector("full_step", full_step)
    if full_step.shape != x0.shape:
        raise ValueError(f"full_step must have shape {x0.shape} like x0, got {full_step.shape}")
    expected_improvement = _real("expected_improvement", expected_improvement)
    max_constraint = v.positive("max_constraint", max_constraint)
    shrink = v.fraction_open("shrink", shrink)
    max_backtracks = v.count("max_backtracks", max_backtracks)
    accept_ratio = v.nonnegative("accept_ratio", accept_ratio)
    constraint_slack = v.positive("constraint_slack", constraint_slack)
    constraint_rtol = v.nonnegative("constraint_rtol", constraint_rtol)
    v.function("evaluate", evaluate)
    if f0 is None:
        f0, _ = _evaluate(evaluate, x0.copy())
    else:
        f0 = v.real_number("f0", f0)
    if not np.isfinite(f0):
        raise ValueError(f"the objective at x0 (f0) must be finite, got {f0}")
    if expected_improvement < 0.0:
        # g^T s computed in floating point can land a few ulps below 0 for a tiny gradient
        rounding = _IMPROVEMENT_ROUNDING * max(1.0, abs(f0))
        if expected_improvement < -rounding:
            raise ValueError(
                f"expected_improvement = {expected_improvement:.3e} < 0: full_step is not an "
                f"ascent direction (g^T s must be >= 0; values down to -{rounding:.1e} are "
                f"taken as rounding); check the sign of the gradient and of the step"
            )
        expected_improvement = 0.0

    bound = constraint_slack * max_constraint
    bound_with_rounding = bound + constraint_rtol * bound
    fractions: list[float] = []
    objectives: list[float] = []
    constraints: list[float] = []
    status = Status.NO_IMPROVEMENT
    dtype = np.result_type(x0, full_step)
    for k in range(max_backtracks + 1):
        fraction = shrink**k
        x = (x0 + fraction * full_step).astype(dtype, copy=False)
        # evaluate gets its own copy: a callback that writes into it cannot corrupt x
        objective, constraint = _evaluate(evaluate, x.copy())
        fractions.append(fraction)
        objectives.append(objective)
        constraints.append(constraint)
        improvement = objective - f0
        if not (np.isfinite(objective) and np.isfinite(constraint)):
            status = Status.NON_FINITE
        elif constraint > bound_with_rounding:
            status = Status.CONSTRAINT_VIOLATED
        elif improvement <= 0.0 or (
            accept_ratio > 0.0 and improvement < accept_ratio * fraction * expected_improvement
        ):
            status = Status.NO_IMPROVEMENT
        else:
            return LineSearchResult(
                x=x,
                accepted=True,
                step_fraction=fraction,
                n_backtracks=k,
                fractions=np.asarray(fractions),
                objectives=np.asarray(objectives),
                constraints=np.asarray(constraints),
                objective=objective,
                constraint=constraint,
                f0=f0,
                status=Status.ACCEPTED,
                message=render(
                    Status.ACCEPTED,
                    _WHAT_HAPPENED[Status.ACCEPTED].format(frac=fraction, nb=k),
                ),
            )
    n_trials = len(fractions)
    return LineSearchResult(
        x=x0,
        accepted=False,
        step_fraction=0.0,
        n_backtracks=n_trials - 1,
        fractions=np.asarray(fractions),
        objectives=np.asarray(objectives),
        constraints=np.asarray(constraints),
        objective=f0,
        constraint=0.0,
        f0=f0,
        status=status,
        message=render(status, _WHAT_HAPPENED[status].format(nt=n_trials, bound=bound)),
    )
