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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core._pow2 import ldexp as _ldexp
from trustregion.core._pow2 import times_pow2 as _times_pow2
from trustregion.core.cg import CGResult, CGSpectrum, _solve
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
    Status.OUT_OF_RANGE: (
        "the step or beta overflows the floating-point type (d^T H d = {curv:.3e}); "
        "the step is zero"
    ),
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
        ``NEGATIVE_CURVATURE``, ``NON_FINITE``, ``ZERO_DIRECTION``, ``NOT_ASCENT``, or
        ``OUT_OF_RANGE`` (the step or :math:`\\beta` overflows the dtype).
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
        Otherwise a zero step and a status saying why; never NaN, never an infinite step
        (``OUT_OF_RANGE`` when the step or beta overflows). ``expected_improvement`` is
        inf when only :math:`g^T s` exceeds the dtype (the step itself is exact).

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
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        curvature = float(np.dot(d, Hd))
        gd = float(np.dot(g, d))
    # Scale safety: d^T H d and g^T d underflow (H with 1e-200 entries was "not positive
    # definite") or overflow far from unit scale. Then they are recomputed from vectors
    # rescaled by powers of two (exact) and the step is formed in the rescaled units.
    exps = _exponents(g, d, Hd) if not _in_window(curvature, gd) else None

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

    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(Hd))):
        return rejected(Status.NON_FINITE)
    if not np.any(d):
        return rejected(Status.ZERO_DIRECTION)
    if exps is None:
        if not np.isfinite(curvature):
            return rejected(Status.NON_FINITE)
        if curvature <= 0.0:
            return rejected(Status.NEGATIVE_CURVATURE)
        if gd <= 0.0:
            return rejected(Status.NOT_ASCENT)
        # d^T H d and g^T d are safe, but 2 delta / d^T H d can still overflow (delta = 1e300
        # over d^T H d = 1e-100 gave beta = inf and an infinite "BOUNDARY" step) or underflow;
        # then the rescaled formulas below take over.
        ratio = 2.0 * delta / curvature
        if _RATIO_WINDOW[0] < ratio < _RATIO_WINDOW[1]:
            beta = float(np.sqrt(ratio))
            with np.errstate(over="ignore", under="ignore"):
                step = (beta * d).astype(dtype, copy=False)
            if not np.all(np.isfinite(step)):  # beta is exact to rounding: the step overflows
                return rejected(Status.OUT_OF_RANGE)
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
        # curvature > 0 and g^T d > 0: g, d and Hd are nonzero and finite, so exps exists
        exps = _exponents(g, d, Hd)
        if exps is None:  # pragma: no cover - excluded by the tests above
            return rejected(Status.NON_FINITE)
    e_g, e_d, e_h = exps
    # Each vector is brought to max |u| in [0.5, 1) by a power of two; _times_pow2 keeps that
    # exact when 2^-e itself does not fit (e_h = -1046 for a subnormal Hd raised OverflowError).
    d_hat = _times_pow2(d, -e_d)
    g_hat = _times_pow2(g, -e_g)
    curv_hat = float(np.dot(d_hat, _times_pow2(Hd, -e_h)))
    gd_hat = float(np.dot(g_hat, d_hat))
    # curvature = curv_hat 2^(e_d + e_h), g^T d = gd_hat 2^(e_g + e_d)
    curvature = _ldexp(curv_hat, e_d + e_h)
    gd = _ldexp(gd_hat, e_g + e_d)
    if curv_hat <= 0.0:
        return rejected(Status.NEGATIVE_CURVATURE)
    if gd_hat <= 0.0:
        return rejected(Status.NOT_ASCENT)
    # step = sqrt(2 delta / curvature) d = d_hat sqrt(2 m_delta / m_c) 2^(k / 2), with
    # delta = m_delta 2^e_delta, curv_hat = m_c 2^e_c and k = e_delta - e_c + e_d - e_h: the
    # mantissas keep the root in [1, 2.9), so neither 2 delta nor the ratio can overflow.
    m_delta, e_delta = math.frexp(delta)
    m_c, e_c = math.frexp(curv_hat)
    k = e_delta - e_c + e_d - e_h
    odd = k % 2
    root = math.sqrt(2.0 * m_delta / m_c * (2.0 if odd else 1.0))
    half = (k - odd) // 2
    with np.errstate(over="ignore", under="ignore"):
        step = _times_pow2(d_hat * root, half).astype(dtype)
        expected = _ldexp(float(np.dot(g_hat, step)), e_g)
    beta = _ldexp(root, half - e_d)
    # An infinite g^T s alone (huge g) is the rounded value of a true overflow, and the step
    # is still exact: only an overflowing step or beta means there is nothing right to return.
    if not (np.all(np.isfinite(step)) and math.isfinite(beta)):
        return rejected(Status.OUT_OF_RANGE)
    return ScaledStep(
        step=step,
        beta=beta,
        expected_improvement=expected,
        curvature=curvature,
        predicted_constraint=delta,
        status=Status.BOUNDARY,
        success=True,
        message=render(Status.BOUNDARY, _WHAT_HAPPENED[Status.BOUNDARY]),
    )


# Outside this window of |d^T H d| and |g^T d| the direct formulas may have lost digits to
# underflow or be about to overflow; inside it they are used as they are (bit for bit).
_WINDOW = (2.0**-400, 2.0**400)
# Likewise for 2 delta / d^T H d: inside, beta and beta^2 d^T H d are far from over- and
# underflow; outside (delta = 1e300 over d^T H d = 1e-100) the rescaled formulas are used.
_RATIO_WINDOW = (2.0**-1000, 2.0**1000)


def _in_window(*values: float) -> bool:
    return all(_WINDOW[0] < abs(x) < _WINDOW[1] for x in values)


def _exponents(*vectors: np.ndarray) -> tuple[int, ...] | None:
    """Binary exponents of ``max |u|`` for each vector (None when one is zero or not finite)."""
    out = []
    for u in vectors:
        m = float(np.max(np.abs(u)))
        if m == 0.0 or not math.isfinite(m):
            return None
        out.append(math.frexp(m)[1])
    return tuple(out)


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

    @property
    def spectrum(self) -> CGSpectrum:
        """Ritz values and extreme-eigenvalue and condition estimates of ``H + damping I``
        from the inner CG solve, at no extra ``hvp`` call (``cg.spectrum``)."""
        return self.cg.spectrum


# natural_gradient_step's names for the arguments it hands to CG, for CG's error messages.
_NATURAL_NAMES = {
    "A": "hvp", "b": "g", "x0": "x0", "rtol": "cg_rtol", "atol": "cg_rtol",
    "maxiter": "cg_iters", "M": "M", "damping": "damping",
}


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
        ``hvp(v) -> H v``; called at most ``cg_iters + 2`` times (one more with ``x0``):
        ``cg_iters`` by CG's iterations, one by its check of the true residual when it
        meets its tolerance (a check that leads to a restart counts as one of the
        ``cg_iters``, see :func:`~trustregion.cg`), and one for ``d^T H d``.
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

    sol = _solve(
        hvp, g, x0=x0, rtol=cg_rtol, atol=0.0, maxiter=cg_iters, M=None, damping=damping,
        callback=None, spectrum=False, names=_NATURAL_NAMES,
    )
    d = sol.x
    if sol.status is Status.OUT_OF_RANGE:
        scaled = ScaledStep(
            step=np.zeros_like(d),
            beta=0.0,
            expected_improvement=0.0,
            curvature=float("nan"),
            predicted_constraint=0.0,
            status=Status.OUT_OF_RANGE,
            success=False,
            message=render(
                Status.OUT_OF_RANGE, "the CG direction overflows; the step is zero"
            ),
        )
    elif sol.status is Status.NON_FINITE:
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
