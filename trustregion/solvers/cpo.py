r"""The closed-form step of Constrained Policy Optimization (Achiam et al., 2017).

Solves

.. math::

    \max_x\; g^T x \quad\text{s.t.}\quad b^T x + c \le 0, \qquad \tfrac12 x^T H x \le \delta

(``H`` symmetric positive definite, e.g. the Fisher matrix; ``b`` the gradient of a cost
whose linearized value after the step must stay below its limit, ``c`` the current excess)
through its Lagrange dual, with two CG solves :math:`v \approx H^{-1} g`,
:math:`w \approx H^{-1} b` and the scalars

.. math::

    q = g^T v,\quad r = b^T v,\quad s = b^T w,\quad
    A = q - r^2/s \;(\ge 0),\quad B = 2\delta - c^2/s.

The stationarity condition of the Lagrangian :math:`g^Tx - \nu(b^Tx + c) - \lambda(\tfrac12
x^THx - \delta)` gives :math:`x = (v - \nu w)/\lambda`, and the dual is, for
:math:`\lambda > 0, \nu \ge 0`,

.. math::

    \min\; \frac{q - 2\nu r + \nu^2 s}{2\lambda} - \nu c + \lambda\delta,
    \qquad \nu^\star(\lambda) = \max\Bigl(0, \frac{r + \lambda c}{s}\Bigr),

a convex function of :math:`\lambda` once :math:`\nu` is eliminated, with two pieces:

- where :math:`r + \lambda c \le 0` (:math:`\nu = 0`, the linear constraint inactive):
  :math:`\frac{q}{2\lambda} + \lambda\delta`, minimized at :math:`\lambda_b = \sqrt{q/2\delta}`
  (the TRPO step :math:`x = \sqrt{2\delta/q}\, v`);
- where :math:`r + \lambda c > 0` (:math:`\nu > 0`, active): :math:`\frac{A}{2\lambda} +
  \frac{B\lambda}{2} - \frac{rc}{s}`, minimized at :math:`\lambda_a = \sqrt{A/B}` (both
  constraints active).

Each candidate is clipped to its piece's interval, the one with the lower dual value wins
(Appendix 10.2 of the paper). The cases:

- **inactive** (``c <= 0`` and ``B <= 0``: the trust region lies inside the half-space; or
  the clipped minimizer has :math:`\nu = 0`): the TRPO step;
- **active** (:math:`\nu > 0`): :math:`x = u/\lambda - (c/s)\,w` with :math:`u = v - (r/s) w`,
  the form that stays finite as :math:`A \to 0` (``g`` parallel to ``b``);
- **recovery** (``c > 0`` and ``B <= 0``: no point of the trust region satisfies the linear
  constraint): :math:`x = -\sqrt{2\delta/s}\; w`, the step that decreases the constraint
  most within the trust region.

About the signs: with ``g`` the gradient of the objective to *maximize*, the multiplier is
:math:`\nu = (r + \lambda c)/s`. The paper writes :math:`(\lambda c - r)/s`, which is right
for the reference implementation (``jachiam/cpo``), where ``g`` is the gradient of a loss
to minimize; OmniSafe combines an ascent ``g`` with the paper's formula. The tests compare
every case against ``scipy.optimize.minimize(method="SLSQP")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from trustregion.core import _validation as v
from trustregion.core._pow2 import ldexp as _ldexp
from trustregion.core.cg import CGResult, _scaled_operator, _solve
from trustregion.core.status import Status, render

# What cpo_step found, per status; render() appends the remedy.
_WHAT_HAPPENED = {
    Status.INACTIVE: "linear constraint inactive: the TRPO step",
    Status.ACTIVE: "both constraints active (nu = {nu:.3e}, lambda = {lam:.3e})",
    Status.RECOVERY: (
        "infeasible: c = {c:.3e} > sqrt(2 delta s) = {reach:.3e}; recovery step along -H^-1 b"
    ),
    Status.INFEASIBLE_NO_DIRECTION: (
        "infeasible (c = {c:.3e} > 0) and b = 0: no step can reduce the constraint"
    ),
    Status.NEGATIVE_CURVATURE: "H is not positive definite along {which} (CG: {cg})",
    Status.NON_FINITE: "hvp returned a non-finite value while solving for {which}",
    Status.OUT_OF_RANGE: "{which} does not fit the floating-point type; the step is zero",
}
# The three cases of the CPO step are answers; the others produce no step.
_SUCCESS = frozenset({Status.INACTIVE, Status.ACTIVE, Status.RECOVERY})


@dataclass(frozen=True, eq=False)
class CPOStepResult:
    """Outcome of :func:`cpo_step`.

    Attributes
    ----------
    step : ndarray
        The step :math:`x` (zeros for ``INFEASIBLE_NO_DIRECTION``, ``NEGATIVE_CURVATURE``,
        ``NON_FINITE`` and ``OUT_OF_RANGE``).
    lam : float
        :math:`\\lambda`, the trust-region multiplier (0 for recovery and failures).
    nu : float
        :math:`\\nu`, the linear-constraint multiplier (for recovery: the step length
        :math:`\\sqrt{2\\delta/s}` along :math:`-w`, as the reference implementation).
    status : Status
        The case solved, ``INACTIVE``, ``ACTIVE`` or ``RECOVERY``; or why there is no step:
        ``INFEASIBLE_NO_DIRECTION``, ``NEGATIVE_CURVATURE``, ``NON_FINITE``,
        ``OUT_OF_RANGE`` (the step does not fit the floating-point type).
    success : bool
        True for the three cases ``INACTIVE``, ``ACTIVE`` and ``RECOVERY``.
    expected_improvement : float
        :math:`g^T x`, the linear model's improvement.
    predicted_constraint : float
        :math:`b^T x + c`, the linearized constraint after the step (<= 0 unless recovery).
    predicted_divergence : float
        :math:`\\tfrac12 x^T H x` from the CG quantities (:math:`\\delta` on the boundary),
        without an extra ``hvp`` call.
    q, r, s : float
        :math:`g^T H^{-1} g`, :math:`b^T H^{-1} g`, :math:`b^T H^{-1} b` (from CG).
    cg_g, cg_b : CGResult or None
        The two CG solves (``cg_b`` is None when ``b = 0``), in the units of the rescaled
        copy when the problem was badly scaled.

    The multipliers and CG scalars of a badly scaled problem can overflow where its step
    fits: they are then inf (never NaN), and the step is still the answer.
    message : str
    """

    step: np.ndarray
    lam: float
    nu: float
    status: Status
    success: bool
    expected_improvement: float
    predicted_constraint: float
    predicted_divergence: float
    q: float
    r: float
    s: float
    cg_g: CGResult
    cg_b: CGResult | None
    message: str


# Below this fraction of q, A = q - r^2/s is cancellation noise: g is parallel to b in the
# H^{-1} inner product, the u part of the step carries no objective (g^T u / lambda =
# sqrt(A B) -> 0) and is dropped rather than amplified by 1 / lambda.
_PARALLEL = 1e-10


def _orthogonal_part(q: float, r: float, s: float) -> float:
    """A = q - r^2/s, the squared H^{-1}-norm of g's part orthogonal to b (0 if parallel)."""
    A = q - r * r / s
    return A if A > _PARALLEL * q else 0.0


def _dual_minimizer(q: float, r: float, s: float, c: float, delta: float) -> tuple[float, bool]:
    """Minimize the dual over lambda > 0 when B > 0; return (lambda, piece a?)."""
    A = _orthogonal_part(q, r, s)
    B = 2.0 * delta - c * c / s

    def dual_a(lam: float) -> float:
        return (A / (2.0 * lam) if A > 0.0 else 0.0) + 0.5 * B * lam - r * c / s

    def dual_b(lam: float) -> float:
        return (q / (2.0 * lam) if q > 0.0 else 0.0) + lam * delta

    # Intervals of the two pieces, {r + lam c > 0} (a) and {r + lam c <= 0} (b), on lam > 0.
    inf = float("inf")
    interval_a: tuple[float, float] | None
    interval_b: tuple[float, float] | None
    if c > 0.0:
        split = -r / c
        interval_a = (max(split, 0.0), inf)
        interval_b = (0.0, split) if split > 0.0 else None
    elif c < 0.0:
        split = -r / c
        interval_a = (0.0, split) if split > 0.0 else None
        interval_b = (max(split, 0.0), inf)
    else:
        interval_a, interval_b = ((0.0, inf), None) if r > 0.0 else (None, (0.0, inf))

    candidates: list[tuple[float, float, bool]] = []
    if interval_a is not None:
        lam_a = float(np.clip(np.sqrt(A / B), *interval_a))
        candidates.append((dual_a(lam_a) if lam_a > 0.0 else -r * c / s, lam_a, True))
    if interval_b is not None:
        lam_b = float(np.clip(np.sqrt(q / (2.0 * delta)), *interval_b))
        candidates.append((dual_b(lam_b), lam_b, False))
    _, lam, active = min(candidates, key=lambda item: item[0])
    return lam, active


def cpo_step(
    g: Any,
    b: Any,
    c: float,
    hvp: Callable[[np.ndarray], Any],
    delta: float,
    *,
    cg_iters: int = 10,
    damping: float = 0.0,
    cg_rtol: float = 1e-10,
) -> CPOStepResult:
    r"""The CPO step: :math:`\max g^Tx` s.t. :math:`b^Tx + c \le 0,\ \tfrac12 x^THx \le \delta`.

    See the module docstring for the dual and its cases.

    Parameters
    ----------
    g : array_like, shape (n,)
        Gradient of the objective to maximize.
    b : array_like, shape (n,)
        Gradient of the constraint function.
    c : float
        Current constraint value minus its limit (> 0: the current point violates it).
    hvp : callable
        ``hvp(u) -> H u``, ``H`` symmetric positive definite (the Fisher matrix in CPO).
        Called at most ``2 * cg_iters + 2`` times: by the two CG solves' iterations and
        their checks of the true residual (see :func:`~trustregion.cg`), no extra product
        for the dual's scalars; for an
        operator far from unit scale (CG rescales it), up to twice that: both solves are
        repeated with ``H`` scaled by a power of two, so that the scalars of the dual stay
        in range.
    delta : float
        Trust-region size :math:`\delta > 0`.
    cg_iters : int
        CG iteration limit per solve.
    damping : float
        :math:`\lambda_H \ge 0`: ``H + damping I`` is used throughout.
    cg_rtol : float
        CG relative residual tolerance.

    Returns
    -------
    CPOStepResult

    Raises
    ------
    ValueError, TypeError
        Non-finite or mismatched ``g``, ``b``, non-finite ``c``, ``delta <= 0``, bad CG
        settings, or an ``hvp`` returning the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> import trustregion as tr
    >>> from trustregion import cpo_step
    >>> H = np.diag([1.0, 4.0]); g = np.array([1.0, 1.0]); b = np.array([1.0, 0.0])
    >>> res = cpo_step(g, b, -0.05, H.dot, delta=0.02)
    >>> res.status.name
    'ACTIVE'
    >>> x = res.step
    >>> round(float(b @ x - 0.05), 12), round(float(0.5 * x @ H @ x), 12)
    (0.0, 0.02)

    Far from the constraint it is the TRPO step:

    >>> res = cpo_step(g, b, -10.0, H.dot, delta=0.02)
    >>> trpo = tr.natural_gradient_step(g, H.dot, delta=0.02).step
    >>> res.status.name, bool(np.allclose(res.step, trpo))
    ('INACTIVE', True)
    """
    g = v.float_vector("g", g)
    b = v.float_vector("b", b)
    if b.shape != g.shape:
        raise ValueError(f"b must have shape {g.shape} like g, got {b.shape}")
    c = v.real_number("c", c)
    if not np.isfinite(c):
        raise ValueError(f"c must be finite, got {c}")
    delta = v.positive("delta", delta)
    cg_iters = v.count("cg_iters", cg_iters, minimum=1)
    damping = v.nonnegative("damping", damping)
    cg_rtol = v.nonnegative("cg_rtol", cg_rtol)
    v.function("hvp", hvp)
    dtype = np.result_type(g, b)
    g, b = g.astype(dtype, copy=False), b.astype(dtype, copy=False)
    settings = dict(cg_iters=cg_iters, damping=damping, cg_rtol=cg_rtol)
    return _cpo_step(_Problem(g, b, c, hvp, delta, settings), retry=True)


class _Problem(NamedTuple):
    """A validated :func:`cpo_step` problem, as the rescalings pass it on."""

    g: np.ndarray
    b: np.ndarray
    c: float
    hvp: Callable[[np.ndarray], Any]
    delta: float
    settings: dict[str, Any]


def _cpo_step(
    problem: _Problem, *, retry: bool, c_exp: int = 0, solved_g: CGResult | None = None
) -> CPOStepResult:
    """:func:`cpo_step` on a validated problem, with the constraint value ``c 2^c_exp``.

    ``retry``: whether an operator far from unit scale may be solved again rescaled (once:
    the rescaled problem is not retried). The rescalings multiply ``c`` by powers of two one
    after the other; ``c_exp`` collects them so that ``c`` is rounded once, in the units of
    the innermost problem, where an underflow of ``c`` is negligible against the reach of the
    trust region (rounded at each level, ``c`` underflowed to 0 on its way to units where it
    was not negligible, and an active step came out 0). ``solved_g``: the solve of ``H v = g``
    when the caller has it already (the same ``g`` and ``hvp``).
    """
    g, b, c, hvp, delta, settings = problem
    cg_iters, damping, cg_rtol = settings["cg_iters"], settings["damping"], settings["cg_rtol"]
    dtype = g.dtype
    n = g.shape[0]
    scaled = _rescaled(problem, retry, c_exp)
    if scaled is not None:
        return scaled
    if c_exp:
        c = _clamped(_ldexp(c, c_exp))

    def cg(rhs: np.ndarray, name: str) -> CGResult:
        names = dict(_CG_NAMES, b=name)
        return _solve(
            hvp, rhs, x0=None, rtol=cg_rtol, atol=0.0, maxiter=cg_iters, M=None,
            damping=damping, callback=None, spectrum=False, names=names,
        )

    def result(
        status: Status,
        x: np.ndarray,
        *,
        lam: float = 0.0,
        nu: float = 0.0,
        divergence: float = 0.0,
        q: float = 0.0,
        r: float = 0.0,
        s: float = 0.0,
        cg_b: CGResult | None = None,
        fmt: dict[str, Any] | None = None,
    ) -> CPOStepResult:
        if status in _SUCCESS and not _finite(x, lam, nu, divergence):
            # a scale the rescalings did not bring near 1 (an ill-conditioned H): no answer
            # rather than an inf or NaN one
            return result(Status.OUT_OF_RANGE, zero, q=q, r=r, s=s, cg_b=cg_b,
                          fmt={"which": "the step or its multipliers"})  # fmt: skip
        return CPOStepResult(
            step=x,
            lam=lam,
            nu=nu,
            status=status,
            success=status in _SUCCESS,
            expected_improvement=float(g @ x),
            predicted_constraint=float(b @ x) + c,
            predicted_divergence=divergence,
            q=q,
            r=r,
            s=s,
            cg_g=cg_g,
            cg_b=cg_b,
            message=render(
                status, _WHAT_HAPPENED[status].format(lam=lam, nu=nu, c=c, **(fmt or {}))
            ),
        )

    zero = np.zeros(n, dtype=dtype)
    cg_g = cg(g, "g") if solved_g is None else solved_g
    e_A = _operator_exponent(cg_g) if retry else 0
    if e_A or (retry and abs(math.frexp(delta)[1]) > _WINDOW_EXP):
        # An operator far from unit scale, or a delta far from 1, puts lambda = sqrt(q / 2
        # delta) past the range (an infinite or zero step, or lambda**2 raising): solve in
        # units where both are near 1, once (the step is scaled back once: in two stages, a
        # small step underflowed in between). Only an operator that needs rescaling is
        # solved again; with delta alone, this solve is handed on.
        return _rescaled_region(problem, e_A, False, c_exp, None if e_A else cg_g)
    failure = _cg_failure(cg_g, "g")
    if failure is not None:
        return result(failure[0], zero, fmt=failure[1])
    v_g = cg_g.x
    q = max(float(g @ v_g), 0.0)
    if not math.isfinite(q):
        return result(Status.OUT_OF_RANGE, zero, fmt={"which": "g^T H^-1 g"})

    def trpo_step(cg_b: CGResult | None, r: float, s: float) -> CPOStepResult:
        if q == 0.0:  # g = 0: nothing to gain, and the current point is feasible
            return result(Status.INACTIVE, zero, cg_b=cg_b, r=r, s=s)
        lam = float(np.sqrt(q / (2.0 * delta)))
        return result(
            Status.INACTIVE, v_g / lam, lam=lam, divergence=delta, q=q, r=r, s=s, cg_b=cg_b
        )

    if not np.any(b):
        if c <= 0.0:
            return trpo_step(None, 0.0, 0.0)
        return result(Status.INFEASIBLE_NO_DIRECTION, zero, q=q)

    cg_b = cg(b, "b")
    e_A = _operator_exponent(cg_b) if retry else 0
    if e_A:
        return _rescaled_region(problem, e_A, False, c_exp, None)
    failure = _cg_failure(cg_b, "b")
    if failure is not None:
        return result(failure[0], zero, q=q, cg_b=cg_b, fmt=failure[1])
    w = cg_b.x
    r = float(b @ v_g)
    s = float(b @ w)
    if not (math.isfinite(r) and math.isfinite(s)):
        return result(
            Status.OUT_OF_RANGE, zero, q=q, cg_b=cg_b, fmt={"which": "b^T H^-1 g or b^T H^-1 b"}
        )
    if not s > 0.0:
        return result(
            Status.NEGATIVE_CURVATURE,
            zero,
            q=q,
            r=r,
            s=s,
            cg_b=cg_b,
            fmt={"which": "b", "cg": f"b^T H^-1 b = {s:.3e} <= 0"},
        )
    B = 2.0 * delta - c * c / s
    # B = 0 < c: the region touches the hyperplane at one point, which is the recovery step.
    if c > 0.0 and B <= 0.0:
        nu = float(np.sqrt(2.0 * delta / s))
        return result(
            Status.RECOVERY,
            -nu * w,
            nu=nu,
            divergence=delta,
            q=q,
            r=r,
            s=s,
            cg_b=cg_b,
            fmt={"reach": float(np.sqrt(2.0 * delta * s))},
        )
    if c <= 0.0 and B <= 0.0:
        return trpo_step(cg_b, r, s)

    try:
        lam, active = _dual_minimizer(q, r, s, c, delta)
        if not active:
            if lam == 0.0:
                return trpo_step(cg_b, r, s)
            x = v_g / lam
            return result(
                Status.INACTIVE,
                x,
                lam=lam,
                divergence=0.5 * q / lam**2,
                q=q,
                r=r,
                s=s,
                cg_b=cg_b,
            )
        nu = (r + lam * c) / s
        A = _orthogonal_part(q, r, s)
        if A == 0.0 or lam == 0.0:
            x = -(c / s) * w  # the point of the hyperplane nearest to 0 in the H-norm
        else:
            u = v_g - (r / s) * w  # H-orthogonal to w, with u^T H u = A
            x = u / lam - (c / s) * w
        divergence = 0.5 * ((A / lam**2 if A > 0.0 else 0.0) + c * c / s)
        return result(
            Status.ACTIVE, x, lam=lam, nu=nu, divergence=divergence, q=q, r=r, s=s, cg_b=cg_b
        )
    except ArithmeticError:
        # (Python floats raise where NumPy's give inf: lambda**2 or q / 2 lambda past the
        # range, which the rescalings above keep away from; a safety net, not a path)
        return result(Status.OUT_OF_RANGE, zero, q=q, r=r, s=s, cg_b=cg_b, fmt={"which": "lambda"})


_CG_NAMES = {
    "A": "hvp", "b": "g", "x0": "x0", "rtol": "cg_rtol", "atol": "cg_rtol",
    "maxiter": "cg_iters", "M": "M", "damping": "damping",
}
# Gradients whose largest entry lies outside [2^-100, 2^100] are rescaled (see _rescaled),
# and so is a delta outside that range (see _rescaled_region).
_WINDOW_EXP = 100


def _exponent(u: np.ndarray) -> int:
    """Binary exponent of ``max |u|`` (0 for a zero vector)."""
    m = float(np.max(np.abs(u)))
    return math.frexp(m)[1] if m > 0.0 else 0


def _clamped(c: float) -> float:
    """``c`` with an overflow to +-inf replaced by the largest float of its sign.

    Rescaled, a finite ``c`` can overflow; then it is so large against the reach of the trust
    region that only its sign matters (``c^2 / s`` overflows and B < 0: the recovery or the
    TRPO step), and the largest float keeps that sign without becoming a "non-finite c".
    """
    return c if math.isfinite(c) else math.copysign(_BIG, c)


_BIG = float(np.finfo(np.float64).max)


def _finite(x: np.ndarray, *scalars: float) -> bool:
    return bool(np.all(np.isfinite(x))) and all(math.isfinite(t) for t in scalars)


def _operator_exponent(sol: CGResult) -> int:
    """``k`` if CG rescaled the operator by ``2^k`` (far from unit scale), else 0.

    Such an operator puts q, r, s (and lambda, or H^-1 g itself: ``OUT_OF_RANGE``) near the
    ends of the range; :func:`_rescaled_region` then solves again with ``2^k H``.
    """
    scale = sol.lanczos_scale  # c_A (no preconditioner): an exact power of two
    return math.frexp(scale)[1] - 1 if scale != 1.0 and scale > 0.0 else 0


def _rescaled(problem: _Problem, retry: bool, c_exp: int) -> CPOStepResult | None:
    """The step of a badly scaled problem from its rescaled copy, or None if none is needed.

    The step is invariant under ``g -> c_g g`` and ``(b, c) -> c_b (b, c)`` (c_g, c_b > 0),
    so ``g`` and ``b`` are brought near unit scale by powers of two (exact) and the
    multipliers and CG scalars converted back: ``lambda = lambda' / c_g``,
    ``nu = nu' c_b / c_g``, ``q = q' / c_g^2``, ``r = r' / (c_g c_b)``, ``s = s' / c_b^2``.
    Without it, ``g`` near 1e200 overflowed ``g^T H^-1 g`` and gave a zero "inactive" step.
    """
    g, b, c, _, delta, _ = problem
    e_g, e_b = _exponent(g), _exponent(b)
    if abs(e_g) <= _WINDOW_EXP and abs(e_b) <= _WINDOW_EXP:
        return None
    dtype = g.dtype
    limit = 1000 if dtype == np.float64 else 120
    e_g, e_b = max(-limit, min(limit, e_g)), max(-limit, min(limit, e_b))
    g_n = g * dtype.type(math.ldexp(1.0, -e_g))
    b_n = b * dtype.type(math.ldexp(1.0, -e_b))
    inner = _cpo_step(problem._replace(g=g_n, b=b_n), retry=retry, c_exp=c_exp - e_b)
    c = _clamped(_ldexp(c, c_exp))  # (the caller's c: finite, but c / |b| may not be)
    lam = _ldexp(inner.lam, e_g)
    # (the recovery step's length along -w, w = H^-1 b: w scales as b, the length inversely)
    nu = _ldexp(inner.nu, -e_b if inner.status is Status.RECOVERY else e_g - e_b)
    s = _ldexp(inner.s, 2 * e_b)
    # sqrt(2 delta s) from the copy's s, which does not underflow where s does
    reach = _ldexp(math.sqrt(2.0 * delta) * math.sqrt(inner.s), e_b) if s > 0 else 0.0
    return _in_callers_units(
        inner, g, b, c, x=inner.step, lam=lam, nu=nu, q=_ldexp(inner.q, 2 * e_g),
        r=_ldexp(inner.r, e_g + e_b), s=s, reach=reach, divergence=inner.predicted_divergence,
    )


def _rescaled_region(
    problem: _Problem, e_A: int, retry: bool, c_exp: int, solved_g: CGResult | None
) -> CPOStepResult:
    """The step from a copy with ``H`` scaled by ``2^e_A`` and ``delta`` brought near 1.

    Two more invariances, with powers of two (exact): ``(H, delta) -> 2^k (H, delta)``
    leaves the step unchanged, and ``x = 2^m y`` turns the problem into one for ``y`` with
    ``(c, delta) -> (2^-m c, 2^-2m delta)``. With ``m`` chosen so that
    ``delta' = 2^(e_A - 2m) delta`` is near 1 and g, b near unit scale (:func:`_rescaled`),
    q, r, s, lambda and the step of the copy are all far from the ends of the range, where
    before lambda = sqrt(q / 2 delta) underflowed to 0 (an infinite step) or ``lambda**2``
    overflowed. Back in the caller's units: ``x = 2^m y``, ``lambda = 2^(e_A - m) lambda'``,
    ``nu = nu'`` (recovery: ``2^(m - e_A) nu'``), ``(q, r, s) = 2^e_A (q', r', s')``, the
    divergence ``2^(2m - e_A)`` times the copy's. A step that does not fit the dtype is
    ``OUT_OF_RANGE``. ``e_A != 0`` solves the two CG systems again (``hvp`` called up to
    twice as often as usual); ``e_A = 0`` calls nothing more.
    """
    g, b, c, hvp, delta, _ = problem
    dtype = g.dtype
    m = (math.frexp(delta)[1] + e_A) // 2
    delta_n = math.ldexp(delta, e_A - 2 * m)  # in [0.25, 2): no rounding
    hvp_n = hvp
    if e_A:
        hvp_n = _scaled_operator(
            hvp, dtype.type(math.ldexp(1.0, e_A)), "hvp", g.shape[0], dtype, g.shape
        )
    inner = _cpo_step(problem._replace(hvp=hvp_n, delta=delta_n), retry=retry,
                      c_exp=c_exp - m, solved_g=solved_g)
    c = _clamped(_ldexp(c, c_exp))
    with np.errstate(over="ignore", under="ignore"):
        x = np.ldexp(inner.step, m).astype(dtype, copy=False)
    lam = _ldexp(inner.lam, e_A - m)
    if inner.status is Status.RECOVERY:
        nu = _ldexp(inner.nu, m - e_A)
    else:
        nu = inner.nu
    # sqrt(2 delta s) = 2^m sqrt(2 delta' s'), from the copy's values
    reach = _ldexp(math.sqrt(2.0 * delta_n * inner.s), m) if inner.s > 0 else 0.0
    return _in_callers_units(
        inner, g, b, c, x=x, lam=lam, nu=nu, q=_ldexp(inner.q, e_A), r=_ldexp(inner.r, e_A),
        s=_ldexp(inner.s, e_A), reach=reach,
        divergence=_ldexp(inner.predicted_divergence, 2 * m - e_A),
    )


def _in_callers_units(
    inner: CPOStepResult, g: np.ndarray, b: np.ndarray, c: float, *, x: np.ndarray,
    lam: float, nu: float, q: float, r: float, s: float, reach: float, divergence: float,
) -> CPOStepResult:
    """The result of a rescaled copy (``inner``), its values given back in the caller's
    units: the message rewritten with them, the predictions recomputed from ``x``."""
    message = inner.message
    if inner.status in (Status.ACTIVE, Status.RECOVERY, Status.INFEASIBLE_NO_DIRECTION):
        message = render(
            inner.status,
            _WHAT_HAPPENED[inner.status].format(lam=lam, nu=nu, c=c, reach=reach),
        )
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        expected = float(g @ x)
        predicted = float(b @ x) + c
    # (the copy's status, CG results and success; everything else in the caller's units)
    back = replace(inner, step=x, lam=lam, nu=nu, expected_improvement=expected,
                   predicted_constraint=predicted, predicted_divergence=divergence, q=q, r=r,
                   s=s, message=message)
    return _range_checked(back, c)


def _range_checked(res: CPOStepResult, c: float) -> CPOStepResult:
    """``res``, or ``OUT_OF_RANGE`` with a zero step if, converted back to the caller's
    units, its step does not fit the dtype (a successful step is never inf or NaN).

    The multipliers and CG scalars may overflow where the step fits (lambda ~ 1e310 for a
    step of 1e-160): they are then inf, the step still the answer.
    """
    scalars = (res.lam, res.nu, res.predicted_divergence)
    if not res.success or (
        bool(np.all(np.isfinite(res.step))) and not any(math.isnan(t) for t in scalars)
    ):
        return res
    status = Status.OUT_OF_RANGE
    return replace(
        res,
        step=np.zeros_like(res.step),
        lam=0.0,
        nu=0.0,
        status=status,
        success=False,
        expected_improvement=0.0,
        predicted_constraint=c,
        predicted_divergence=0.0,
        message=render(status, _WHAT_HAPPENED[status].format(which="the step")),
    )


def _cg_failure(sol: CGResult, which: str) -> tuple[Status, dict[str, Any]] | None:
    """A status when CG produced no usable solution (as natural_gradient_step decides)."""
    if sol.status is Status.NON_FINITE:
        return Status.NON_FINITE, {"which": f"H^-1 {which}"}
    if sol.status is Status.OUT_OF_RANGE:
        # x was clipped to the largest float: no step can be formed from it
        return Status.OUT_OF_RANGE, {"which": f"H^-1 {which}"}
    if sol.status is Status.NEGATIVE_CURVATURE and not np.any(sol.x):
        return Status.NEGATIVE_CURVATURE, {"which": which, "cg": sol.message}
    return None
