r"""The contracts the core's solvers promise, checkable on anyone's implementation.

The checks rely only on numbers: the returned iterate (``x`` or ``p``), an optional
``success``/``accepted`` flag, and what the solver asked of the functions it was given
(instrumented here). They never look at a status enum, so they work on any solver that
returns an object with those attributes (or, for CG, scipy's ``(x, info)`` pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator

from trustregion.testing import _differences as fd
from trustregion.testing._report import (
    CheckReport,
    as_float_array,
    number_argument,
    vector_argument,
)

#: rounding allowed in residuals and model values, in multiples of n eps
CONTRACT_ULPS = 64


def _iterate_and_flag(report: CheckReport, result: Any, attribute: str) -> tuple[Any, bool | None]:
    """The iterate and the success flag of a result object, or of scipy's ``(x, info)``.

    Named fields come first: a NamedTuple ``(x, success)`` is a tuple of two too, and
    reading it as ``(x, info)`` would invert its flag (``info == 0`` means success).
    """
    if hasattr(result, attribute):
        flag = getattr(result, "success", None)
        return getattr(result, attribute), None if flag is None else bool(flag)
    if type(result) is tuple and len(result) == 2:  # plain, without named fields
        x, info = result
        return x, info == 0
    report.fail(f"the result has no attribute {attribute!r} (got {type(result).__name__})")
    raise AssertionError  # unreachable: fail raises


class _Operator(LinearOperator):
    """A counted dense operator that can be made to return NaN from its ``k``-th call on."""

    def __init__(self, A: np.ndarray, dtype: np.dtype, nan_from: int | None = None) -> None:
        super().__init__(dtype=dtype, shape=A.shape)
        self.A = A
        self.calls = 0
        self.nan_from = nan_from

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = (self.A @ np.asarray(v, dtype=np.float64).reshape(-1)).astype(self.dtype)
        if self.nan_from is not None and self.calls >= self.nan_from:
            out[0] = np.nan
        return out

    def __call__(self, v: np.ndarray) -> np.ndarray:  # usable as a plain callable too
        return self._matvec(v)


def _vector_and_matrix(
    vector_name: str, vector: Any, matrix_name: str, matrix: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The contract's vector, and its dense ``(n, n)`` oracle matrix in float64."""
    vector = vector_argument(vector_name, vector)
    matrix = np.asarray(matrix, dtype=np.float64)
    n = vector.size
    if matrix.shape != (n, n):
        raise ValueError(
            f"{matrix_name} must have shape ({n}, {n}) like {vector_name}, got {matrix.shape}"
        )
    # the oracle's norms and eigenvalues decide what is demanded: an inf makes every
    # tolerance infinite (anything passes) and a NaN makes LAPACK fail
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{matrix_name} must be finite")
    return vector, matrix


def check_cg_contract(
    solve: Callable[..., Any],
    A: Any,
    b: Any,
    *,
    rtol: float = 1e-6,
    preconditioner: bool = True,
    non_finite: bool = True,
) -> CheckReport:
    r"""Check a conjugate-gradient solver's contract on the system ``A x = b``.

    ``solve(A, b, *, rtol, maxiter, M)`` is called with ``A`` (and ``M``) as scipy
    ``LinearOperator`` objects that are also plain callables, and must return an object with
    ``x`` (and optionally ``success``) or scipy's ``(x, info)``. The contract:

    1. ``x`` is finite and shaped like ``b``, and at most ``maxiter + 2`` products are taken;
    2. a claimed success means :math:`\|b - A x\| \le \mathrm{rtol}\,\|b\| +
       64\,n\,\epsilon\,(\|A\|\|x\| + \|b\|)`;
    3. on a symmetric positive definite ``A`` with :math:`64\,n\,\epsilon\,\kappa \le 0.1\,
       \mathrm{rtol}` and ``maxiter = 10 n``, it succeeds;
    4. ``preconditioner``: with :math:`M = A^{-1}`, one iteration (``maxiter=1``) gives
       :math:`A^{-1} b` to :math:`64\,n\,\epsilon\,\kappa` relative error (a CG that ignores
       ``M`` takes one steepest-descent step instead); skipped when that bound exceeds 0.1;
    5. ``non_finite``: an operator that returns NaN from its second product on gives a
       finite ``x`` and no claimed success.

    Parameters
    ----------
    solve : callable
    A : array_like, shape (n, n)
        The dense finite matrix (the oracle); the solver sees it only through products.
    b : array_like, shape (n,)
    rtol : float
        Finite, ``>= 0``.
    preconditioner, non_finite : bool
        Run contracts 4 and 5.

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_cg_contract")
    b, A = _vector_and_matrix("b", b, "A", A)
    rtol = number_argument("rtol", rtol)
    dtype = b.dtype
    n = b.size
    e = fd.eps(dtype)
    b64 = b.astype(np.float64)
    norm_b = float(np.linalg.norm(b64))
    norm_A = float(np.linalg.norm(A, 2))
    symmetric = bool(np.allclose(A, A.T, rtol=0, atol=16 * n * e * max(norm_A, 1e-300)))
    eigenvalues = np.linalg.eigvalsh(0.5 * (A + A.T)) if symmetric else None
    spd = eigenvalues is not None and eigenvalues[0] > 0
    cond = float(eigenvalues[-1] / eigenvalues[0]) if spd and eigenvalues is not None else math.inf
    calls = 0

    def run(op: _Operator, what: str, **kwargs: Any) -> tuple[np.ndarray, bool | None]:
        nonlocal calls
        result = solve(op, b.copy(), **kwargs)
        calls += 1
        x, flag = _iterate_and_flag(report, result, "x")
        x = as_float_array(report, f"x ({what})", x, b.shape)
        if not np.all(np.isfinite(x)):
            report.fail(f"x is not finite ({what}): the last good iterate must be returned")
        limit = kwargs["maxiter"] + 2
        report.compare(
            f"products with A ({what}): {op.calls} for maxiter = {kwargs['maxiter']}",
            float(op.calls),
            float(limit),
            "maxiter + 2 (one for x0, one spare)",
        )
        return x, flag

    maxiter = 10 * n
    op = _Operator(A, dtype)
    x, flag = run(op, "plain solve", rtol=rtol, maxiter=maxiter, M=None)
    slack = CONTRACT_ULPS * n * e * (norm_A * float(np.linalg.norm(x)) + norm_b)
    residual = float(np.linalg.norm(b64 - A @ x))
    if flag is None or flag:
        report.compare(
            f"residual of a claimed success: ||b - A x|| = {residual:.3e}",
            residual,
            rtol * norm_b + slack,
            f"rtol ||b|| = {rtol * norm_b:.2e} + {CONTRACT_ULPS} n eps({dtype.name}) "
            "(||A|| ||x|| + ||b||)"
            f" = {slack:.2e}",
        )
    solvable = spd and CONTRACT_ULPS * n * e * cond <= 0.1 * rtol
    if solvable and flag is False:
        report.fail(
            f"no success on a symmetric positive definite system with condition number "
            f"{cond:.3g} in maxiter = {maxiter} iterations"
        )
    if preconditioner and spd and CONTRACT_ULPS * n * e * cond <= 0.1:
        inverse = np.linalg.inv(A)
        op = _Operator(A, dtype)
        x, _ = run(op, "M = A^-1, maxiter = 1", rtol=rtol, maxiter=1, M=_Operator(inverse, dtype))
        exact = np.linalg.solve(A, b64)
        error = float(np.linalg.norm(x - exact))
        bound = CONTRACT_ULPS * n * e * cond * float(np.linalg.norm(exact))
        report.compare(
            "preconditioning: one iteration with M = A^-1 must give A^-1 b "
            f"(relative error {error / max(float(np.linalg.norm(exact)), 1e-300):.3e})",
            error,
            bound,
            f"{CONTRACT_ULPS} n eps({dtype.name}) cond(A) |A^-1 b|, cond(A) = {cond:.3g}",
        )
    if non_finite and n > 1:
        op = _Operator(A, dtype, nan_from=2)
        x, flag = run(
            op, "NaN from the second product on", rtol=rtol * 1e-6, maxiter=maxiter, M=None
        )
        if flag and op.calls >= 2:
            report.fail("success claimed although the operator returned NaN")
    report.calls["solve"] = calls
    return report


def _cauchy_point(g: np.ndarray, H: np.ndarray, radius: float) -> np.ndarray:
    """Nocedal & Wright (4.12): the model minimizer along -g within the region."""
    g_norm = float(np.linalg.norm(g))
    gHg = float(g @ H @ g)
    tau = 1.0 if gHg <= 0 else min(g_norm**3 / (radius * gHg), 1.0)
    return -tau * radius / g_norm * g


def check_steihaug_contract(
    solve: Callable[..., Any],
    g: Any,
    H: Any,
    radius: float,
    *,
    optimal_value: float | None = None,
    non_finite: bool = True,
) -> CheckReport:
    r"""Check a truncated-CG trust-region solver's contract on :math:`\min g^Tp + \frac12 p^THp`.

    ``solve(hessp, g, radius)`` must return an object with ``p`` (and optionally
    ``predicted_reduction``). With :math:`m(p) = g^Tp + \tfrac12 p^THp`,
    :math:`\tau = 64\,n\,\epsilon\,(\|g\|\Delta + \|H\|\Delta^2)`:

    1. ``p`` finite, :math:`\|p\| \le \Delta (1 + 64 n \epsilon)`;
    2. at least the Cauchy decrease: :math:`m(p) \le m(p_C) + \tau`;
    3. a reported ``predicted_reduction`` equals :math:`-m(p)` to :math:`\tau`;
    4. given ``optimal_value`` :math:`m^*` (e.g. from ``trust_region_problems``) and a
       positive definite ``H``: :math:`-m(p) \ge \tfrac12 (-m^*) - \tau` (Yuan 2000: the
       Steihaug point keeps half the optimal decrease; pass a solver run with a tight
       residual tolerance);
    5. ``non_finite``: a ``hessp`` returning NaN gives a finite ``p`` in the region.

    Parameters
    ----------
    solve : callable
    g : array_like, shape (n,)
    H : array_like, shape (n, n)
        Symmetric and finite; the solver sees it only through ``hessp``.
    radius : float
    optimal_value : float, optional
        The minimum of the model in the region: finite and ``<= 0`` (the model is 0 at 0).
    non_finite : bool

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_steihaug_contract")
    g, H = _vector_and_matrix("g", g, "H", H)
    dtype = g.dtype
    n = g.size
    radius = float(radius)
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be finite and > 0, got {radius!r}")
    if optimal_value is not None:
        # m* <= m(0) = 0; a NaN or positive m* would make contract 4 pass whatever p is
        optimal_value = float(optimal_value)
        if not (optimal_value <= 0 and math.isfinite(optimal_value)):
            raise ValueError(f"optimal_value must be finite and <= 0, got {optimal_value!r}")
    e = fd.eps(dtype)
    g64 = g.astype(np.float64)
    norm_H = float(np.linalg.norm(H, 2))
    tau = CONTRACT_ULPS * n * e * (float(np.linalg.norm(g64)) * radius + norm_H * radius**2)
    source = f"{CONTRACT_ULPS} n eps({dtype.name}) (||g|| radius + ||H|| radius^2) = {tau:.2e}"
    hessp_calls = 0

    def model(p: np.ndarray) -> float:
        return float(g64 @ p + 0.5 * p @ H @ p)

    def hessp(v: np.ndarray, nan: bool = False) -> np.ndarray:
        nonlocal hessp_calls
        hessp_calls += 1
        out = (H @ np.asarray(v, dtype=np.float64)).astype(dtype)
        if nan:
            out[:] = np.nan
        return out

    def run(h: Callable[[np.ndarray], np.ndarray], what: str) -> tuple[np.ndarray, Any]:
        result = solve(h, g.copy(), radius)
        p, _ = _iterate_and_flag(report, result, "p")
        p = as_float_array(report, f"p ({what})", p, g.shape)
        if not np.all(np.isfinite(p)):
            report.fail(f"p is not finite ({what})")
        norm_p = float(np.linalg.norm(p))
        report.compare(
            f"||p|| = {norm_p:.10g} <= radius = {radius:.10g} ({what})",
            max(0.0, norm_p - radius),
            CONTRACT_ULPS * n * e * radius,
            f"{CONTRACT_ULPS} n eps({dtype.name}) radius",
        )
        return p, result

    p, result = run(hessp, "plain solve")
    m_p = model(p)
    if np.any(g64):
        m_c = model(_cauchy_point(g64, H, radius))
        report.compare(
            f"at least the Cauchy decrease: m(p) = {m_p:.10g}, m(Cauchy point) = {m_c:.10g}",
            max(0.0, m_p - m_c),
            tau,
            source,
        )
    else:
        report.compare(f"g = 0: m(p) = {m_p:.10g} must be <= 0", max(0.0, m_p), tau, source)
    reported = getattr(result, "predicted_reduction", None)
    if reported is not None:
        report.compare(
            f"predicted_reduction = {float(reported):.10g} must be -m(p) = {-m_p:.10g}",
            abs(float(reported) + m_p),
            tau,
            source,
        )
    if optimal_value is not None and np.linalg.eigvalsh(H)[0] > 0:
        report.compare(
            f"half the optimal decrease (Yuan 2000): -m(p) = {-m_p:.10g}, "
            f"-m* = {-optimal_value:.10g}",
            max(0.0, 0.5 * -optimal_value - (-m_p)),
            tau,
            source,
        )
    if non_finite:
        run(lambda v: hessp(v, nan=True), "hessp returning NaN")
    report.calls["hessp"] = hessp_calls
    return report


def check_line_search_contract(
    search: Callable[..., Any], problem: Any, *, constraint_rtol: float = 64 * fd.eps(np.float64)
) -> CheckReport:
    r"""Check a backtracking line search's contract on a problem.

    ``problem`` has ``evaluate`` (``x -> (objective, constraint)``, objective maximized),
    ``x0``, ``full_step``, ``expected_improvement``, ``max_constraint``, ``shrink``,
    ``max_backtracks`` and optionally ``first_acceptable`` (the index of the first
    acceptable trial, None if none is), as from ``line_search_problems``. It runs
    ``search(evaluate, x0, full_step, expected_improvement=..., max_constraint=...,
    shrink=..., max_backtracks=...)``, which must return an object with ``x`` and
    ``accepted``. The contract, with :math:`f_0` the objective at ``x0``:

    1. at most :math:`K + 1` trials (evaluations away from ``x0``), the :math:`k`-th at
       :math:`x_0 + \rho^k s`;
    2. an accepted ``x`` is the last trial, finite, feasible (:math:`c \le c_{\max}(1 +
       \mathrm{constraint\_rtol})`: a search may forgive the rounding of a quadratic form,
       as the core's does up to 32 eps) and improving (:math:`f > f_0`); every earlier
       trial was not acceptable even strictly (:math:`c \le c_{\max}`; non-finite trials
       count as not acceptable);
    3. a rejection returns ``x0`` after all :math:`K + 1` trials, none acceptable;
    4. with ``first_acceptable`` known, the accepted trial is that one.

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_line_search_contract")
    constraint_rtol = number_argument("constraint_rtol", constraint_rtol)
    x0 = vector_argument("problem.x0", problem.x0)
    s = vector_argument("problem.full_step", problem.full_step)
    shrink, K = float(problem.shrink), int(problem.max_backtracks)
    cmax = float(problem.max_constraint)
    f0, _ = problem.evaluate(x0.copy())
    f0 = float(f0)
    trials: list[tuple[np.ndarray, float, float]] = []

    def evaluate(x: Any) -> tuple[float, float]:
        x = np.array(x, dtype=np.float64)
        f, c = problem.evaluate(x.copy())
        if not np.array_equal(x, x0):
            trials.append((x, float(f), float(c)))
        return f, c

    result = search(
        evaluate,
        x0.copy(),
        s.copy(),
        expected_improvement=float(problem.expected_improvement),
        max_constraint=cmax,
        shrink=shrink,
        max_backtracks=K,
    )
    x, _ = _iterate_and_flag(report, result, "x")
    x = as_float_array(report, "x", x, x0.shape)
    accepted = bool(getattr(result, "accepted", getattr(result, "success", False)))
    report.compare(
        f"number of trials {len(trials)} <= max_backtracks + 1 = {K + 1}",
        float(len(trials)),
        float(K + 1),
        "the contract",
    )

    def acceptable(f: float, c: float, slack: float = 0.0) -> bool:
        return math.isfinite(f) and math.isfinite(c) and c <= cmax * (1 + slack) and f > f0

    e = fd.eps(x0.dtype)
    for k, (xk, f, c) in enumerate(trials):
        expected = x0.astype(np.float64) + shrink**k * s.astype(np.float64)
        report.compare(
            f"trial {k} must be at x0 + shrink^{k} full_step",
            float(np.max(np.abs(xk - expected))),
            4 * e * float(np.max(np.abs(x0)) + np.max(np.abs(s))),
            "4 eps (|x0| + |s|)",
        )
        last = k == len(trials) - 1
        if not (accepted and last) and acceptable(f, c):
            report.fail(
                f"trial {k} (fraction {shrink**k:.6g}) was acceptable (objective {f:.6g} > "
                f"f0 = {f0:.6g}, constraint {c:.6g} <= {cmax:.6g}) but "
                + ("a later trial was accepted" if accepted else "the search rejected it")
            )
    if accepted:
        if not trials:
            report.fail("accepted without evaluating a trial")
        xk, f, c = trials[-1]
        if not np.array_equal(x, xk):
            report.fail("the accepted x is not the last trial evaluated")
        if not acceptable(f, c, constraint_rtol):
            why = (
                "is not finite"
                if not (math.isfinite(f) and math.isfinite(c))
                else f"violates the constraint ({c:.6g} > {cmax:.6g} (1 + {constraint_rtol:.1e}))"
                if c > cmax * (1 + constraint_rtol)
                else f"does not improve ({f:.6g} <= f0 = {f0:.6g})"
            )
            report.fail(f"the accepted trial {len(trials) - 1} {why}")
    else:
        if not np.array_equal(x, x0):
            report.fail("a rejected search must return x0 unchanged")
        if len(trials) != K + 1:
            report.fail(f"rejected after {len(trials)} trials, before trying all {K + 1}")
    known = getattr(problem, "first_acceptable", None)
    got = len(trials) - 1 if accepted else None
    if hasattr(problem, "first_acceptable") and got != known:
        report.fail(f"accepted trial {got}, but the first acceptable trial is {known}")
    report.calls["search"] = 1
    report.calls["evaluate"] = len(trials)
    return report
