r"""Scaling a search direction onto a quadratic trust region.

For the linear-objective, quadratic-constraint problem at the heart of TRPO and
natural-gradient methods,

.. math::  \max_x\; g^T x \quad\text{s.t.}\quad \tfrac12 x^T H x \le \delta,

the maximizer is :math:`x^\star = \sqrt{2\delta / g^T H^{-1} g}\; H^{-1} g`. Given any
direction :math:`d \approx H^{-1} g` (typically from a few CG iterations), the step
:math:`\beta d` with :math:`\beta = \sqrt{2\delta / d^T H d}` lands exactly on the
constraint boundary: :math:`\tfrac12 (\beta d)^T H (\beta d) = \delta`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core.cg import CGResult, cg
from trustregion.core.status import Status, render

# What scale_step measured, per status; render() appends the remedy.
_WHAT_HAPPENED = {
    Status.BOUNDARY: "step scaled onto the trust-region boundary",
    Status.NEGATIVE_CURVATURE: (
        "d^T H d = {curv:.3e} <= 0: H is not positive definite along the direction; "
        "the step is zero"
    ),
    Status.NON_FINITE: "the direction or H d is not finite (check hvp); the step is zero",
    Status.ZERO_DIRECTION: "the direction is zero; the step is zero",
    Status.NOT_ASCENT: "g^T d = {gd:.3e} <= 0: not an ascent direction; the step is zero",
}


@dataclass(frozen=True, eq=False)
class ScaledStep:
    """Outcome of :func:`scale_step`.

    Attributes
    ----------
    step : ndarray
        :math:`\\beta d`, or zeros when ``status`` is not ``BOUNDARY``.
    beta : float
        :math:`\\sqrt{2\\delta / d^T H d}` (0 when ``status`` is not ``BOUNDARY``).
    expected_improvement : float
        :math:`g^T s`, the improvement of the linear objective predicted for the step.
    curvature : float
        :math:`d^T H d`.
    predicted_constraint : float
        :math:`\\tfrac12 s^T H s`, equal to :math:`\\delta` to rounding for an ``BOUNDARY`` step.
    status : Status
        ``BOUNDARY`` (the step lies on the boundary), or why there is no step:
        ``NEGATIVE_CURVATURE``, ``NON_FINITE``, ``ZERO_DIRECTION``, ``NOT_ASCENT``.
    success : bool
        True exactly when ``status`` is ``BOUNDARY``.
    message : str
        What happened and what to try.
    """

    step: np.ndarray
    beta: float
    expected_improvement: float
    curvature: float
    predicted_constraint: float
    status: Status
    success: bool
    message: str


def scale_step(g: Any, direction: Any, Hd: Any, delta: float) -> ScaledStep:
    r"""Scale ``direction`` so the step lies on :math:`\tfrac12 s^T H s = \delta`.

    Parameters
    ----------
    g : array_like, shape (n,)
        Gradient of the (linearized) objective to maximize.
    direction : array_like, shape (n,)
        Search direction :math:`d`, typically an approximation of :math:`H^{-1} g`.
    Hd : array_like, shape (n,)
        :math:`H d`, the constraint's Hessian applied to the direction.
    delta : float
        The constraint bound :math:`\delta > 0`.

    Returns
    -------
    ScaledStep
        With ``status`` ``BOUNDARY``: ``step = beta * d``, ``beta = sqrt(2 delta / d^T H d)``.
        Otherwise a zero step and a status saying why; never NaN.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.diag([2.0, 8.0]); g = np.array([1.0, 1.0])
    >>> d = np.linalg.solve(H, g)
    >>> s = scale_step(g, d, H @ d, delta=0.01)
    >>> round(float(0.5 * s.step @ H @ s.step), 12)
    0.01
    """
    g = v.float_vector("g", g)
    d = v.float_vector("direction", direction, allow_nonfinite=True)
    Hd = v.float_vector("Hd", Hd, allow_nonfinite=True)
    delta = v.positive("delta", delta)
    if d.shape != g.shape or Hd.shape != g.shape:
        raise ValueError(
            f"g, direction and Hd must have the same shape, got {g.shape}, {d.shape}, {Hd.shape}"
        )
    dtype = np.result_type(g, d, Hd)
    curvature = float(np.dot(d, Hd))
    gd = float(np.dot(g, d))

    def rejected(status: Status) -> ScaledStep:
        return ScaledStep(
            step=np.zeros(g.shape, dtype=dtype),
            beta=0.0,
            expected_improvement=0.0,
            curvature=curvature if np.isfinite(curvature) else float("nan"),
            predicted_constraint=0.0,
            status=status,
            success=False,
            message=render(status, _WHAT_HAPPENED[status].format(curv=curvature, gd=gd)),
        )

    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(Hd)) and np.isfinite(curvature)):
        return rejected(Status.NON_FINITE)
    if not np.any(d):
        return rejected(Status.ZERO_DIRECTION)
    if curvature <= 0.0:
        return rejected(Status.NEGATIVE_CURVATURE)
    if gd <= 0.0:
        return rejected(Status.NOT_ASCENT)
    beta = float(np.sqrt(2.0 * delta / curvature))
    step = (beta * d).astype(dtype, copy=False)
    return ScaledStep(
        step=step,
        beta=beta,
        expected_improvement=beta * gd,
        curvature=curvature,
        predicted_constraint=0.5 * beta * beta * curvature,
        status=Status.BOUNDARY,
        success=True,
        message=render(Status.BOUNDARY, _WHAT_HAPPENED[Status.BOUNDARY]),
    )


@dataclass(frozen=True, eq=False)
class NaturalStepResult:
    """Outcome of :func:`natural_gradient_step`.

    Attributes
    ----------
    step : ndarray
        The scaled step :math:`\\beta d` (zeros unless ``status`` is ``BOUNDARY``).
    direction : ndarray
        The CG direction :math:`d \\approx (H + \\lambda I)^{-1} g`.
    beta : float
    expected_improvement : float
        :math:`g^T s`.
    curvature : float
        :math:`d^T (H + \\lambda I) d`.
    status : Status
        As for :class:`ScaledStep` (the CG solve's own status is in ``cg.status``).
    success : bool
        True exactly when ``status`` is ``BOUNDARY``.
    message : str
        The step's message, then CG's.
    cg : CGResult
        The inner CG solve, with its own status and residual history.
    """

    step: np.ndarray
    direction: np.ndarray
    beta: float
    expected_improvement: float
    curvature: float
    status: Status
    success: bool
    message: str
    cg: CGResult


def natural_gradient_step(
    g: Any,
    hvp: Callable[[np.ndarray], Any],
    delta: float,
    *,
    cg_iters: int = 10,
    damping: float = 0.0,
    cg_rtol: float = 1e-10,
    x0: Any = None,
) -> NaturalStepResult:
    r"""The trust-region step :math:`\max_x g^Tx` s.t. :math:`\tfrac12 x^T H x \le \delta`.

    Solves :math:`(H + \lambda I) d = g` with at most ``cg_iters`` CG iterations, then scales
    :math:`d` with :func:`scale_step` using the same damped matrix, so that
    :math:`\tfrac12 s^T (H + \lambda I) s = \delta`. This is the natural-gradient step of TRPO
    with :math:`H` the Fisher matrix (the Hessian of the mean KL).

    If CG meets non-positive curvature after some progress, the last good iterate is still
    an ascent direction in the Krylov space and is used; if it meets it at once, the step is
    zero with status ``NEGATIVE_CURVATURE``.

    Parameters
    ----------
    g : array_like, shape (n,)
        Gradient of the objective to maximize (finite).
    hvp : callable
        ``hvp(v) -> H v``; called at most ``cg_iters + 1`` times.
    delta : float
        Trust-region size :math:`\delta > 0` (the KL bound in TRPO).
    cg_iters : int
        CG iteration limit (TRPO implementations typically use 10-15).
    damping : float
        :math:`\lambda \ge 0` (TRPO implementations typically use 0.01-0.1).
    cg_rtol : float
        CG relative residual tolerance.
    x0 : array_like, optional
        Warm start for CG.

    Returns
    -------
    NaturalStepResult

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[2.0, 0.5], [0.5, 1.0]]); g = np.array([1.0, -1.0])
    >>> res = natural_gradient_step(g, H.dot, delta=0.01)
    >>> exact = np.sqrt(2 * 0.01 / (g @ np.linalg.solve(H, g))) * np.linalg.solve(H, g)
    >>> res.status.name, np.allclose(res.step, exact)
    ('BOUNDARY', True)
    """
    g = v.float_vector("g", g)
    delta = v.positive("delta", delta)
    cg_iters = v.count("cg_iters", cg_iters, minimum=1)
    damping = v.nonnegative("damping", damping)
    v.function("hvp", hvp)
    n = g.shape[0]

    sol = cg(hvp, g, x0=x0, rtol=cg_rtol, maxiter=cg_iters, damping=damping)
    d = sol.x
    if sol.status is Status.NON_FINITE:
        scaled = scale_step(g, d, np.full_like(d, np.nan), delta)
    elif sol.status is Status.NEGATIVE_CURVATURE and not np.any(d):
        # Non-positive curvature on the very first direction (g itself): no usable step.
        curv = float(sol.curvature or 0.0)
        scaled = ScaledStep(
            step=np.zeros_like(d),
            beta=0.0,
            expected_improvement=0.0,
            curvature=curv,
            predicted_constraint=0.0,
            status=Status.NEGATIVE_CURVATURE,
            success=False,
            message=render(
                Status.NEGATIVE_CURVATURE,
                _WHAT_HAPPENED[Status.NEGATIVE_CURVATURE].format(curv=curv, gd=0.0),
            ),
        )
    else:
        Hd = v.matvec_output("hvp", hvp(d), n, d.dtype)
        if damping:
            Hd = Hd + damping * d
        scaled = scale_step(g, d, Hd, delta)
    return NaturalStepResult(
        step=scaled.step,
        direction=d,
        beta=scaled.beta,
        expected_improvement=scaled.expected_improvement,
        curvature=scaled.curvature,
        status=scaled.status,
        success=scaled.success,
        message=f"{scaled.message}; CG: {sol.message}",
        cg=sol,
    )
