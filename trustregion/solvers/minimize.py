r"""Unconstrained trust-region minimization, a drop-in for ``scipy.optimize.minimize``.

``minimize(fun, x0, jac=..., hessp=..., method="trust-ncg", options=...)`` takes scipy's
arguments, option names and defaults and returns a :class:`scipy.optimize.OptimizeResult`
with the same fields, so switching is a change of import. The outer loop (Nocedal & Wright,
*Numerical Optimization*, 2nd ed., Algorithm 4.1) is kept apart from the subproblem solver
(:func:`trustregion.steihaug_cg`), as in scipy. Per iteration, with the model
:math:`m_k(p) = f_k + g_k^T p + \tfrac12 p^T H_k p`:

.. math::

    p_k \approx \arg\min_{\|p\| \le \Delta_k} m_k(p), \qquad
    \rho_k = \frac{f(x_k) - f(x_k + p_k)}{m_k(0) - m_k(p_k)},

    \Delta_{k+1} = \begin{cases} \Delta_k / 4 & \rho_k < \tfrac14 \\
    \min(2\Delta_k, \Delta_{\max}) & \rho_k > \tfrac34,\ \|p_k\| = \Delta_k \\
    \Delta_k & \text{otherwise,} \end{cases}
    \qquad x_{k+1} = \begin{cases} x_k + p_k & \rho_k > \eta \\ x_k & \text{otherwise.}
    \end{cases}

What differs from scipy's ``trust-ncg``, by design:

- the predicted reduction comes from the CG recurrences, not from one more ``hessp`` call per
  iteration, and negative curvature is followed to the boundary without two more;
- the inner CG has an iteration cap (``cg_maxiter``, ``10 n`` by default, as
  ``scipy.sparse.linalg.cg``: floating-point CG on an ill-conditioned Hessian needs more
  than ``n`` iterations, and a tighter cap costs outer iterations);
- a non-finite ``fun``, ``jac`` or ``hessp`` value ends the run with ``reason`` ``NON_FINITE``
  (status 4) and
  the last good point (scipy's loop turns a NaN into ``rho = nan``, rejects the step without
  shrinking the radius and repeats it until ``maxiter``);
- a step too small to change ``x`` in floating point ends the run (``reason``
  ``STEP_TOO_SMALL``, status 5); scipy
  goes on shrinking the radius until its predicted reduction, computed as the difference of
  two nearly equal model values, rounds to zero (status 2);
- a preconditioner may be given (option ``preconditioner``), which measures the trust region
  in the norm :math:`\|p\|_{M^{-1}}`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

from trustregion.core import _validation as v
from trustregion.core.status import Status, render
from trustregion.core.steihaug import SteihaugResult, steihaug_cg
from trustregion.solvers._common import optimize_result, scalar_output, wrap_callback

# ``OptimizeResult.status`` keeps scipy's integer codes where scipy has the outcome (0, 1, 2
# and 99 mean what they mean in scipy; its 3, a linear-algebra error of the dense subproblem
# solvers, cannot occur matrix-free); the others continue its numbering. The shared
# :class:`~trustregion.Status` is in ``OptimizeResult.reason``.
SCIPY_STATUS_CODES: dict[Status, int] = {
    Status.CONVERGED: 0,
    Status.MAX_ITER: 1,
    Status.NO_PREDICTED_DECREASE: 2,
    Status.NON_FINITE: 4,
    Status.STEP_TOO_SMALL: 5,
    Status.INDEFINITE_PRECONDITIONER: 6,
    Status.CALLBACK_STOP: 99,
}

# scipy's strings, verbatim, so code matching on them keeps working.
_SCIPY_MESSAGES = {
    Status.CONVERGED: "Optimization terminated successfully.",
    Status.MAX_ITER: "Maximum number of iterations has been exceeded.",
    Status.NO_PREDICTED_DECREASE: "A bad approximation caused failure to predict improvement.",
}
_WHAT_HAPPENED = {
    Status.NON_FINITE: "{what} returned a non-finite value; the last finite point is returned",
    Status.STEP_TOO_SMALL: (
        "the trust region shrank until the step no longer changes x, with |jac| = {gnorm:.3g} "
        ">= gtol = {gtol:.3g}"
    ),
    Status.INDEFINITE_PRECONDITIONER: "the preconditioner is not positive definite (r^T M r <= 0)",
    Status.CALLBACK_STOP: "`callback` raised `StopIteration`",
}


def _message(status: Status, **detail: Any) -> str:
    if status in _SCIPY_MESSAGES:
        return _SCIPY_MESSAGES[status]
    return render(status, _WHAT_HAPPENED[status].format(**detail))


_SCIPY_OPTIONS = (
    "initial_trust_radius",
    "max_trust_radius",
    "eta",
    "gtol",
    "maxiter",
    "disp",
    "return_all",
)
_OWN_OPTIONS = ("cg_maxiter", "cg_rtol", "preconditioner")


@dataclass(frozen=True)
class TrustNCGOptions:
    """Validated options of ``method="trust-ncg"`` (scipy's names and defaults first)."""

    initial_trust_radius: float = 1.0
    max_trust_radius: float = 1000.0
    eta: float = 0.15
    gtol: float = 1e-4
    maxiter: int | None = None
    disp: bool = False
    return_all: bool = False
    cg_maxiter: int | None = None
    cg_rtol: float | None = None
    preconditioner: Any = None

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None, tol: float | None) -> TrustNCGOptions:
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(_SCIPY_OPTIONS) - set(_OWN_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method 'trust-ncg'; known options are "
                f"{list(_SCIPY_OPTIONS + _OWN_OPTIONS)}"
            )
        if tol is not None:
            opts.setdefault("gtol", tol)  # as scipy: tol sets gtol unless given
        out = cls(**opts)
        out._validate()
        return out

    def _validate(self) -> None:
        initial = v.positive("initial_trust_radius", self.initial_trust_radius)
        maximum = v.positive("max_trust_radius", self.max_trust_radius)
        if initial >= maximum:
            raise ValueError(
                f"initial_trust_radius must be < max_trust_radius, got {initial!r} >= {maximum!r}"
            )
        eta = v.nonnegative("eta", self.eta)
        if eta >= 0.25:
            raise ValueError(f"eta must lie in [0, 0.25), got {self.eta!r}")
        v.nonnegative("gtol", self.gtol)
        if self.maxiter is not None:
            v.count("maxiter", self.maxiter, minimum=1)
        if self.cg_maxiter is not None:
            v.count("cg_maxiter", self.cg_maxiter, minimum=1)
        if self.cg_rtol is not None:
            v.nonnegative("cg_rtol", self.cg_rtol)


class _Objective:
    """``fun``, ``jac`` and Hessian products of the user, with counts and checks.

    Every user function receives a fresh copy of ``x`` (as in scipy, gh-13740) so that it
    may keep or modify it.
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        jac: Callable[..., Any] | bool,
        hess: Callable[..., Any] | None,
        hessp: Callable[..., Any] | None,
        args: tuple[Any, ...],
        n: int,
    ) -> None:
        v.function("fun", fun)
        if jac is True:
            self._fun_and_grad = True
        elif callable(jac):
            self._fun_and_grad = False
        else:
            raise TypeError(
                "jac must be a callable returning the gradient, or True when fun returns "
                f"(f, gradient); got {jac!r} (trust-region methods need the gradient)"
            )
        if hess is None and hessp is None:
            raise ValueError(
                "either hess or hessp is required for trust-region methods (got neither)"
            )
        if hess is not None and hessp is not None:
            raise ValueError("give hess or hessp, not both")
        for name, function in (("hess", hess), ("hessp", hessp)):
            if function is not None and not callable(function):
                raise TypeError(
                    f"{name} must be callable (finite-difference strings and Hessian update "
                    f"strategies are not supported), got {function!r}"
                )
        self.fun, self.jac, self.hess, self.hessp = fun, jac, hess, hessp
        self.args = args
        self.n = n
        self.nfev = 0
        self.njev = 0
        self.n_hess_eval = 0
        self.nhvp = 0
        self._pending_grad: tuple[np.ndarray, np.ndarray] | None = None
        self._hess_cache: tuple[np.ndarray, Any] | None = None

    def value(self, x: np.ndarray) -> float:
        """``fun(x)`` as a float (NaN/inf passed through for the caller to judge)."""
        self.nfev += 1
        out = self.fun(x.copy(), *self.args)
        if self._fun_and_grad:
            try:
                out, grad = out
            except (TypeError, ValueError):
                raise TypeError(
                    f"with jac=True, fun must return (value, gradient), got {type(out).__name__}"
                ) from None
            self.njev += 1
            self._pending_grad = (x.copy(), np.asarray(grad))
        return scalar_output("fun", out)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """``jac(x)`` as a float64 vector; a wrong shape raises."""
        if self._pending_grad is not None and np.array_equal(self._pending_grad[0], x):
            grad = self._pending_grad[1]
        else:
            if self._fun_and_grad:  # only reached if value(x) was not the last call
                self.value(x)
                assert self._pending_grad is not None
                grad = self._pending_grad[1]
            else:
                self.njev += 1
                assert callable(self.jac)
                grad = np.asarray(self.jac(x.copy(), *self.args))
        if grad.shape != (self.n,):
            if grad.size == self.n:
                grad = grad.reshape(self.n)
            else:
                raise ValueError(f"jac returned shape {grad.shape}, expected ({self.n},)")
        if grad.dtype.kind not in "fiub":
            raise TypeError(f"jac must return real numbers, got dtype {grad.dtype}")
        return grad.astype(np.float64, copy=False)

    def hessian_operator(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``p -> H(x) p``, counting products; ``hess(x)`` is evaluated once per point."""
        if self.hessp is not None:
            hessp, args = self.hessp, self.args
            x_fixed = x.copy()

            def product(p: np.ndarray) -> np.ndarray:
                self.nhvp += 1
                return np.asarray(hessp(x_fixed.copy(), p, *args))

            return product
        # After a rejected step the point is the same: reuse its Hessian (as scipy does).
        matvec = v.as_matvec("hess(x)", self.hessian_at(x), self.n)

        def matrix_product(p: np.ndarray) -> np.ndarray:
            self.nhvp += 1
            return np.asarray(matvec(p))

        return matrix_product

    def hessian(self, x: np.ndarray) -> Any:
        assert self.hess is not None
        self.n_hess_eval += 1
        H = self.hess(x.copy(), *self.args)
        if not callable(H) and not hasattr(H, "shape"):
            H = np.asarray(H)
        if not hasattr(H, "shape"):
            raise TypeError(
                f"hess must return a matrix (ndarray, sparse or LinearOperator), got {H!r}"
            )
        return H

    def hessian_at(self, x: np.ndarray) -> Any:
        """``hess(x)``, from the cache when ``x`` is the last point it was evaluated at."""
        if self._hess_cache is None or not np.array_equal(self._hess_cache[0], x):
            self._hess_cache = (x.copy(), self.hessian(x))
        return self._hess_cache[1]

    @property
    def nhev(self) -> int:
        """scipy's count: ``hessp`` calls, or ``hess`` evaluations when ``hess`` is given."""
        return self.n_hess_eval if self.hess is not None else self.nhvp


def _preconditioner_at(preconditioner: Any, x: np.ndarray, args: tuple[Any, ...]) -> Any:
    """The preconditioner as an operator at ``x`` (a callable is ``(x, v, *args) -> M v``)."""
    if preconditioner is None or not callable(preconditioner) or hasattr(preconditioner, "shape"):
        return preconditioner
    x_fixed = x.copy()
    return lambda r: preconditioner(x_fixed.copy(), r, *args)


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    *,
    args: Sequence[Any] = (),
    jac: Callable[..., Any] | bool,
    hess: Callable[..., Any] | None = None,
    hessp: Callable[..., Any] | None = None,
    method: str = "trust-ncg",
    tol: float | None = None,
    callback: Callable[..., Any] | None = None,
    options: dict[str, Any] | None = None,
) -> OptimizeResult:
    r"""Minimize a smooth function by the Newton-CG trust-region method.

    Arguments, options and result follow ``scipy.optimize.minimize(method="trust-ncg")``; see
    the module docstring for the algorithm and what differs from scipy.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float``; with ``jac=True``, ``fun(x, *args) -> (float, gradient)``.
    x0 : array_like, shape (n,)
        Starting point (computations are in float64, as scipy).
    args : tuple
        Extra arguments passed to ``fun``, ``jac``, ``hess``, ``hessp`` and a callable
        preconditioner.
    jac : callable or True
        ``jac(x, *args) -> ndarray (n,)``, or True when ``fun`` returns the gradient too.
    hess : callable, optional
        ``hess(x, *args)`` returning an ``(n, n)`` ndarray, scipy.sparse matrix or
        ``LinearOperator``; evaluated once per new point.
    hessp : callable, optional
        ``hessp(x, p, *args) -> H(x) p``. Exactly one of ``hess`` and ``hessp`` is required.
    method : str
        ``"trust-ncg"`` (case-insensitive), the only method.
    tol : float, optional
        Sets ``gtol`` unless ``options`` gives it (scipy's rule).
    callback : callable, optional
        Called after each iteration as ``callback(xk)``, or as
        ``callback(intermediate_result=OptimizeResult(x=xk, fun=fk))`` when that is its only
        parameter. Raising ``StopIteration`` ends the run with status 99.
    options : dict, optional
        scipy's options, with scipy's defaults:

        - ``initial_trust_radius`` (1.0), ``max_trust_radius`` (1000.0): :math:`\Delta_0`,
          :math:`\Delta_{\max}`; ``0 < initial < max``.
        - ``eta`` (0.15): acceptance threshold on :math:`\rho`, in ``[0, 0.25)``.
        - ``gtol`` (1e-4): stop when :math:`\|g\|_2 <` ``gtol``.
        - ``maxiter`` (``200 n``), ``disp`` (False), ``return_all`` (False).

        and these of ours:

        - ``cg_maxiter`` (``10 n``): inner CG iteration cap.
        - ``cg_rtol`` (None): inner relative residual tolerance; None is the forcing term
          :math:`\min(\tfrac12, \sqrt{\|g\|})\,\|g\|` (scipy's).
        - ``preconditioner`` (None): :math:`M \approx H^{-1}`, symmetric positive definite:
          an ndarray, sparse matrix or ``LinearOperator``, or a callable
          ``preconditioner(x, v, *args) -> M(x) v``. The trust region is then
          :math:`\|p\|_{M^{-1}} \le \Delta` and the radii are in that norm.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x``, ``fun``, ``jac``, ``nit``, ``nfev``, ``njev``, ``nhev`` (``hessp`` calls, or
        ``hess`` evaluations when ``hess`` is given, as scipy counts), ``status``
        (scipy's integer code, see ``SCIPY_STATUS_CODES``), ``reason`` (the shared
        :class:`~trustregion.Status`), ``success``, ``message``; also ``nhvp``, the number of
        Hessian-vector products in either case, ``hess`` at ``x`` when ``hess`` is given,
        and ``allvecs`` with ``return_all``. ``x``, ``fun`` and ``jac`` are never NaN.

    Raises
    ------
    ValueError, TypeError
        Non-finite ``fun`` or ``jac`` at ``x0``, wrong shapes from ``jac``, ``hess``,
        ``hessp`` or the preconditioner, neither or both of ``hess`` and ``hessp``, unknown
        or invalid options, an unknown method.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    >>> import trustregion as tr
    >>> res = tr.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der,
    ...                   hessp=rosen_hess_prod, method="trust-ncg")
    >>> res.success, np.allclose(res.x, [1.0, 1.0], atol=1e-6)
    (True, True)

    The same call through scipy reaches the same point with more Hessian-vector products:

    >>> from scipy.optimize import minimize as scipy_minimize
    >>> ref = scipy_minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der,
    ...                      hessp=rosen_hess_prod, method="trust-ncg")
    >>> bool(np.allclose(res.x, ref.x, atol=1e-6)), bool(res.nhev < ref.nhev)
    (True, True)
    """
    if not isinstance(method, str) or method.lower() != "trust-ncg":
        raise ValueError(f"method must be 'trust-ncg', got {method!r}")
    x = np.atleast_1d(np.asarray(x0))
    x = v.float_vector("x0", x).astype(np.float64)
    n = x.shape[0]
    args = tuple(args) if isinstance(args, tuple | list) else (args,)
    opts = TrustNCGOptions.from_dict(options, tol)
    objective = _Objective(fun, jac, hess, hessp, args, n)
    notify = wrap_callback(callback)

    f = objective.value(x)
    if not np.isfinite(f):
        raise ValueError(f"fun(x0) must be finite, got {f}")
    g = v.float_vector("jac(x0)", objective.gradient(x))  # raises if not finite

    def solve_subproblem(x: np.ndarray, g: np.ndarray, radius: float) -> SteihaugResult:
        return steihaug_cg(
            objective.hessian_operator(x),
            g,
            radius,
            rtol=opts.cg_rtol,
            maxiter=10 * n if opts.cg_maxiter is None else opts.cg_maxiter,
            M=_preconditioner_at(opts.preconditioner, x, args),
        )

    return _trust_region_loop(objective, x, f, g, solve_subproblem, opts, notify)


def _trust_region_loop(
    objective: _Objective,
    x: np.ndarray,
    f: float,
    g: np.ndarray,
    solve_subproblem: Callable[[np.ndarray, np.ndarray, float], SteihaugResult],
    opts: TrustNCGOptions,
    notify: Callable[[OptimizeResult], Any] | None,
) -> OptimizeResult:
    """The outer loop (scipy's ``_minimize_trust_region``), independent of the subproblem."""
    maxiter = 200 * x.shape[0] if opts.maxiter is None else opts.maxiter
    radius = float(opts.initial_trust_radius)
    allvecs = [x.copy()] if opts.return_all else None
    status = Status.CONVERGED
    detail: dict[str, Any] = {}
    k = 0
    g_norm = float(np.linalg.norm(g))
    while g_norm >= opts.gtol:
        sub = solve_subproblem(x, g, radius)
        if sub.status is Status.NON_FINITE:
            status = Status.NON_FINITE
            detail["what"] = "hessp/hess or the preconditioner"
            break
        if sub.status is Status.INDEFINITE_PRECONDITIONER:
            status = Status.INDEFINITE_PRECONDITIONER
            break
        predicted = sub.predicted_reduction
        if not predicted > 0.0:
            status = Status.NO_PREDICTED_DECREASE
            break
        x_trial = x + sub.p
        if np.array_equal(x_trial, x):
            status = Status.STEP_TOO_SMALL
            break
        f_trial = objective.value(x_trial)
        if not np.isfinite(f_trial):
            status = Status.NON_FINITE
            detail["what"] = f"fun (at a trial point, value {f_trial})"
            break
        rho = (f - f_trial) / predicted
        if rho < 0.25:
            radius *= 0.25
        elif rho > 0.75 and sub.hits_boundary:
            radius = min(2.0 * radius, opts.max_trust_radius)
        if rho > opts.eta:
            g_trial = objective.gradient(x_trial)
            if not np.all(np.isfinite(g_trial)):
                status = Status.NON_FINITE
                detail["what"] = "jac (at an accepted point)"
                break
            x, f, g = x_trial, f_trial, g_trial
            g_norm = float(np.linalg.norm(g))
        if allvecs is not None:
            allvecs.append(x.copy())
        k += 1
        if notify is not None:
            try:
                notify(optimize_result(x=x, fun=f))
            except StopIteration:
                status = Status.CALLBACK_STOP
                break
        if g_norm < opts.gtol:
            break
        if k >= maxiter:
            status = Status.MAX_ITER
            break

    message = _message(status, gtol=opts.gtol, gnorm=g_norm, **detail)
    result = optimize_result(
        x=x,
        success=status is Status.CONVERGED,
        status=SCIPY_STATUS_CODES[status],
        reason=status,
        message=message,
        fun=f,
        jac=g,
        nit=k,
        nfev=objective.nfev,
        njev=objective.njev,
        nhev=objective.nhev,
        nhvp=objective.nhvp,
    )
    if objective.hess is not None:
        result["hess"] = objective.hessian_at(x)
        result["nhev"] = objective.nhev
    if allvecs is not None:
        result["allvecs"] = allvecs
    if opts.disp:
        print(message)
        print(f"         Current function value: {f:f}")
        print(f"         Iterations: {k:d}")
        print(f"         Function evaluations: {objective.nfev:d}")
        print(f"         Gradient evaluations: {objective.njev:d}")
        print(f"         Hessian evaluations: {objective.nhev:d}")
    return result
