r"""Maximization under a per-step divergence bound: the TRPO step, repeated, on any problem.

Given an objective :math:`f` to maximize, its gradient, a divergence :math:`D(x_k, x) \ge 0`
with :math:`D(x_k, x_k) = 0`, and the Hessian-vector product of :math:`D(x_k, \cdot)` at
:math:`x_k` (the metric :math:`F_k`, e.g. the Fisher information when :math:`D` is a KL
divergence), each iteration

1. solves :math:`F_k d = g_k` by a few CG iterations and scales :math:`d` onto the quadratic
   trust region (:func:`trustregion.natural_gradient_step`):

   .. math::  s_k = \sqrt{\frac{2\delta}{d^T F_k d}}\; d
       \;\approx\; \arg\max_s\; g_k^T s \quad\text{s.t.}\quad \tfrac12 s^T F_k s \le \delta;

2. backtracks along :math:`s_k` (:func:`trustregion.backtracking_line_search`) until
   :math:`f(x_k + t s_k) > f(x_k)` and :math:`D(x_k, x_k + t s_k) \le \delta`, trying
   :math:`t = t_0, t_0\rho, t_0\rho^2, \dots`.

Every step lands on the boundary of the quadratic model, however close :math:`x_k` is to
the maximizer: its metric length is always :math:`s_k^T F_k s_k = 2\delta`, while the
distance to the maximizer shrinks, so near it only a small fraction :math:`t` improves
:math:`f`, and a search that always starts at :math:`t = 1` (TRPO) ends up accepting
overshooting steps and converges slowly, if at all. With ``warm_start=True`` (the default)
the accepted trial of the previous search gives the curvature of :math:`f` along that step,

.. math::  K = \frac{2\,(t\,e - \Delta f)}{t^2}
    \quad\text{from}\quad f(x + t s) \approx f(x) + t\,e - \tfrac12 t^2 K,

with :math:`e = g^T s` the linear prediction. Every boundary step has the same metric
length, so if :math:`f` curves like the metric the next step has the same curvature, and the
next search starts at the model's maximizer :math:`t_0 = \min(1, e_{k+1} / K)` (at
:math:`t_0 = 1` when :math:`K \le 0` or unknown). Where the metric is the negative Hessian
of :math:`f` (maximum likelihood in an exponential family with the Fisher metric), this is
Newton's step, and the iteration converges quadratically; where :math:`f` is nearly linear
over the region (the TRPO surrogate), :math:`K \approx 0` and every search starts at the
boundary as in TRPO. A search that accepts nothing is continued from where it stopped (same
point, same direction, no new CG solve) up to ``max_failed_searches`` times; then the run
stops with ``LINE_SEARCH_FAILED``.

A NaN or inf from ``fun`` or ``divergence`` at a trial point rejects that trial (the line
search's rule); from ``grad`` at an accepted point, or from ``metric_product``, it ends the
run with ``NON_FINITE`` and the last good point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core.line_search import backtracking_line_search
from trustregion.core.status import Status, render
from trustregion.core.step import natural_gradient_step
from trustregion.solvers._common import (
    kept_output,
    optimize_result,
    real_vector_output,
    scalar_output,
    wrap_callback,
)

# What divergence_ascent measured, per status; render() appends the remedy.
_WHAT_HAPPENED = {
    Status.CONVERGED: "converged: |grad| = {gnorm:.3e} <= gtol = {gtol:.3e}",
    Status.MAX_ITER: "iteration limit {nit} reached with |grad| = {gnorm:.3e}",
    Status.LINE_SEARCH_FAILED: (
        "{nf} consecutive line searches accepted no step (last: {ls}); |grad| = {gnorm:.3e}; "
        "at a maximizer within rounding, loosen gtol"
    ),
    Status.STEP_FAILED: "no natural step at iteration {nit}: {step}",
    Status.NON_FINITE: "{what} returned a non-finite value; the last good point is returned",
    Status.CALLBACK_STOP: "`callback` raised `StopIteration`",
}


@dataclass(frozen=True, eq=False)
class AscentResult:
    """Outcome of :func:`divergence_ascent`.

    Attributes
    ----------
    x : ndarray
        The last accepted point (never NaN).
    fun : float
        :math:`f(x)`.
    grad : ndarray
        :math:`\\nabla f(x)`.
    grad_norm : float
        :math:`\\|\\nabla f(x)\\|_2`.
    nit : int
        Iterations (natural directions computed).
    nfev, ngev, ndev, nmp : int
        Calls to ``fun``, ``grad``, ``divergence`` and ``metric_product``.
    n_failed_searches : int
        Line searches that accepted nothing, over the run.
    status : Status
        ``CONVERGED``, ``MAX_ITER``, ``LINE_SEARCH_FAILED``, ``STEP_FAILED``, ``NON_FINITE``
        or ``CALLBACK_STOP``.
    success : bool
        True exactly when ``status`` is ``CONVERGED``.
    message : str
    """

    x: np.ndarray
    fun: float
    grad: np.ndarray
    grad_norm: float
    nit: int
    nfev: int
    ngev: int
    ndev: int
    nmp: int
    n_failed_searches: int
    status: Status
    success: bool
    message: str


def divergence_ascent(
    fun: Callable[[np.ndarray], Any],
    grad: Callable[[np.ndarray], Any],
    divergence: Callable[[np.ndarray, np.ndarray], Any],
    metric_product: Callable[[np.ndarray, np.ndarray], Any],
    x0: Any,
    delta: float,
    *,
    gtol: float = 1e-6,
    maxiter: int = 200,
    cg_iters: int = 10,
    damping: float = 0.0,
    cg_rtol: float = 1e-10,
    shrink: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.0,
    warm_start: bool = True,
    max_failed_searches: int = 3,
    callback: Callable[..., Any] | None = None,
) -> AscentResult:
    r"""Maximize ``fun`` by natural-gradient steps under ``divergence(x_k, x) <= delta``.

    See the module docstring for the iteration.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> float``, the objective to **maximize**.
    grad : callable
        ``grad(x) -> ndarray (n,)``, its gradient.
    divergence : callable
        ``divergence(x_ref, x) -> float``, :math:`D(x_{ref}, x) \ge 0`, zero at ``x_ref``.
    metric_product : callable
        ``metric_product(x_ref, u) -> F(x_ref) u``, the Hessian of ``divergence(x_ref, .)``
        at ``x_ref`` applied to ``u`` (symmetric positive semi-definite).
    x0 : array_like, shape (n,)
        Starting point.
    delta : float
        Per-step divergence bound :math:`\delta > 0`.
    gtol : float
        Stop when :math:`\|\nabla f\|_2 \le` ``gtol``.
    maxiter : int
        Iteration limit.
    cg_iters, damping, cg_rtol
        Passed to :func:`trustregion.natural_gradient_step` (CG on :math:`(F + \lambda I)`).
    shrink, max_backtracks, accept_ratio
        Passed to :func:`trustregion.backtracking_line_search`.
    warm_start : bool
        Start each search at the maximizer of the quadratic fitted along the previous step
        (True, see above) or always at the full boundary step, as TRPO (False).
    max_failed_searches : int
        Consecutive failed searches (each continuing the last) before stopping.
    callback : callable, optional
        After each accepted step: ``callback(xk)``, or
        ``callback(intermediate_result=OptimizeResult(x, fun, divergence, step_fraction))``
        when that is its only parameter. ``StopIteration`` stops the run.

    Returns
    -------
    AscentResult

    Raises
    ------
    ValueError, TypeError
        ``delta <= 0``, non-finite ``fun`` or ``grad`` at ``x0``, wrong shapes from ``grad``
        or ``metric_product``, bad tolerances or counts.

    Examples
    --------
    Fit the logits of a categorical distribution to observed counts by maximum likelihood,
    each step moving the distribution by at most 0.1 nats of KL divergence:

    >>> import numpy as np
    >>> from trustregion import divergence_ascent
    >>> counts = np.array([10.0, 30.0, 60.0]); freq = counts / counts.sum()
    >>> def probs(z): e = np.exp(z - z.max()); return e / e.sum()
    >>> loglik = lambda z: float(freq @ np.log(probs(z)))
    >>> grad = lambda z: freq - probs(z)
    >>> kl = lambda z_ref, z: float(probs(z_ref) @ np.log(probs(z_ref) / probs(z)))
    >>> def fisher(z_ref, u): p = probs(z_ref); return p * u - p * (p @ u)
    >>> res = divergence_ascent(loglik, grad, kl, fisher, np.zeros(3), delta=0.1, gtol=1e-8)
    >>> res.status.name, np.allclose(probs(res.x), freq)
    ('CONVERGED', True)
    """
    x = v.float_vector("x0", np.atleast_1d(np.asarray(x0)))
    n = x.shape[0]
    delta = v.positive("delta", delta)
    gtol = v.nonnegative("gtol", gtol)
    maxiter = v.count("maxiter", maxiter)
    cg_iters = v.count("cg_iters", cg_iters, minimum=1)
    damping = v.nonnegative("damping", damping)
    cg_rtol = v.nonnegative("cg_rtol", cg_rtol)
    shrink = v.fraction_open("shrink", shrink)
    max_backtracks = v.count("max_backtracks", max_backtracks)
    accept_ratio = v.nonnegative("accept_ratio", accept_ratio)
    max_failed_searches = v.count("max_failed_searches", max_failed_searches, minimum=1)
    for name, function in (
        ("fun", fun),
        ("grad", grad),
        ("divergence", divergence),
        ("metric_product", metric_product),
    ):
        v.function(name, function)
    notify = wrap_callback(callback)
    counts = {"nfev": 0, "ngev": 0, "ndev": 0, "nmp": 0}

    def value(x: np.ndarray) -> float:
        counts["nfev"] += 1
        return scalar_output("fun", fun(x.copy()))

    def gradient(x: np.ndarray) -> np.ndarray:
        counts["ngev"] += 1
        raw = grad(x.copy())
        # (g is kept across later calls: a NaN at the next point must not replace it)
        return kept_output(real_vector_output("grad", raw, n).astype(x.dtype, copy=False), raw)

    f = value(x)
    if not np.isfinite(f):
        raise ValueError(f"fun(x0) must be finite, got {f}")
    g = v.float_vector("grad(x0)", gradient(x))  # raises if not finite

    status = Status.MAX_ITER
    detail: dict[str, Any] = {}
    n_failed_total = 0
    start = 1.0  # fraction of the boundary step the next search starts at
    curvature = 0.0  # of f along the last boundary step, from its line search (0: unknown)
    nit = 0
    while True:
        g_norm = float(np.linalg.norm(g))
        if g_norm <= gtol:
            status = Status.CONVERGED
            break
        if nit >= maxiter:
            status = Status.MAX_ITER
            break
        nit += 1
        x_ref = x.copy()

        def metric(u: np.ndarray, x_ref: np.ndarray = x_ref) -> np.ndarray:
            counts["nmp"] += 1
            out = metric_product(x_ref.copy(), u.copy())  # u is CG's direction: keep it intact
            return real_vector_output("metric_product", out, n)

        def evaluate(x_trial: np.ndarray, x_ref: np.ndarray = x_ref) -> tuple[float, float]:
            objective = value(x_trial)
            counts["ndev"] += 1
            return objective, scalar_output("divergence", divergence(x_ref.copy(), x_trial.copy()))

        step = natural_gradient_step(
            g, metric, delta, cg_iters=cg_iters, damping=damping, cg_rtol=cg_rtol
        )
        if step.status is Status.NON_FINITE:
            status, detail["what"] = Status.NON_FINITE, "metric_product"
            break
        if not step.success:
            status, detail["step"] = Status.STEP_FAILED, step.message
            break
        if warm_start and curvature > 0.0:
            # Every boundary step has the same metric length, s^T F s = 2 delta, so if f
            # curves like the metric the new step has the same curvature: start the search
            # at the maximizer of t e - t^2 K / 2.
            start = min(1.0, step.expected_improvement / curvature)
        failures = 0
        while True:
            search = backtracking_line_search(
                evaluate,
                x,
                start * step.step,
                expected_improvement=start * step.expected_improvement,
                max_constraint=delta,
                shrink=shrink,
                max_backtracks=max_backtracks,
                accept_ratio=accept_ratio,
                f0=f,
            )
            if search.accepted:
                break
            failures += 1
            n_failed_total += 1
            start *= shrink ** (max_backtracks + 1)  # continue below the last trial
            if failures >= max_failed_searches:
                break
        if not search.accepted:
            status = Status.LINE_SEARCH_FAILED
            detail.update(nf=failures, ls=search.message)
            break
        accepted_fraction = start * search.step_fraction
        # f(x + t s) = f + t e - t^2 K / 2 through the accepted trial gives K
        curvature = (
            2.0
            * (accepted_fraction * step.expected_improvement - (search.objective - f))
            / accepted_fraction**2
        )
        start = 1.0
        g_new = gradient(search.x)
        if not np.all(np.isfinite(g_new)):
            status, detail["what"] = Status.NON_FINITE, "grad (at an accepted point)"
            break
        x, f, g = search.x, search.objective, g_new
        if notify is not None:
            info = optimize_result(
                x=x, fun=f, divergence=search.constraint, step_fraction=accepted_fraction
            )
            try:
                notify(info)
            except StopIteration:
                status = Status.CALLBACK_STOP
                break

    g_norm = float(np.linalg.norm(g))
    message = render(
        status, _WHAT_HAPPENED[status].format(gnorm=g_norm, gtol=gtol, nit=nit, **detail)
    )
    return AscentResult(
        x=x,
        fun=f,
        grad=g,
        grad_norm=g_norm,
        nit=nit,
        n_failed_searches=n_failed_total,
        status=status,
        success=status is Status.CONVERGED,
        message=message,
        **counts,
    )
