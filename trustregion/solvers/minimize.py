r"""Unconstrained trust-region minimization, a drop-in for ``scipy.optimize.minimize``.

``minimize(fun, x0, jac=..., hess=... or hessp=..., method=..., options=...)`` takes scipy's
arguments, option names and defaults for its four trust-region methods and returns a
:class:`scipy.optimize.OptimizeResult` with the same fields, so switching is a change of
import. The outer loop (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 4.1)
is kept apart from the subproblem solvers (:mod:`trustregion.solvers._subproblems`), as in
scipy. Per iteration, with the model :math:`m_k(p) = f_k + g_k^T p + \tfrac12 p^T H_k p`:

.. math::

    p_k \approx \arg\min_{\|p\| \le \Delta_k} m_k(p), \qquad
    \rho_k = \frac{f(x_k) - f(x_k + p_k)}{m_k(0) - m_k(p_k)},

    \Delta_{k+1} = \begin{cases} \Delta_k / 4 & \rho_k < \tfrac14 \\
    \min(2\Delta_k, \Delta_{\max}) & \rho_k > \tfrac34,\ \|p_k\| = \Delta_k \\
    \Delta_k & \text{otherwise,} \end{cases}
    \qquad x_{k+1} = \begin{cases} x_k + p_k & \rho_k > \eta \\ x_k & \text{otherwise.}
    \end{cases}

Methods (the subproblem solver is the only difference):

- ``trust-ncg``: Steihaug-Toint truncated CG (:func:`trustregion.steihaug_cg`), matrix-free;
- ``trust-krylov``: GLTR, the subproblem solved nearly exactly in a Lanczos basis,
  matrix-free, with the hard case;
- ``trust-exact``: More-Sorensen on the dense Hessian (needs ``hess``);
- ``dogleg``: the dogleg path (needs ``hess``, positive definite).

What differs from scipy, by design:

- the predicted reduction comes from the subproblem solver (CG recurrences, the Lanczos
  tridiagonal, or the dense Hessian), not from one more ``hessp`` call per iteration;
- a Hessian matrix is evaluated at accepted points only (scipy's ``trust-exact`` evaluates
  it at every trial point);
- the inner CG of ``trust-ncg`` has an iteration cap (``cg_maxiter``, ``10 n`` by default);
- a non-finite ``fun`` at a trial point rejects the step and shrinks the region (scipy does
  so for ``+inf`` but repeats a NaN trial without shrinking until ``maxiter``); a non-finite
  ``jac``, ``hess`` or ``hessp`` value at an accepted point ends the run with ``reason``
  ``NON_FINITE`` (status 4) and the last good point, as does a region that shrank to nothing
  with every trial non-finite;
- a predicted decrease below the rounding error of the model around ``f``,
  :math:`2\varepsilon(|f| + \|g\|\|p\|)`, ends the run with status 2 (``reason``
  ``NO_PREDICTED_DECREASE``), which is what scipy reports when its model value, computed as
  ``f + g^T p + ...``, rounds to ``f`` or above: where an ill-conditioned problem cannot
  reach ``gtol``, the run says so as scipy does, and not later; a step that no longer
  changes ``x`` before that ends it with status 5 (``STEP_TOO_SMALL``: ``jac`` is likely
  inconsistent with ``fun``);
- ``trust-ncg`` takes a preconditioner (option ``preconditioner``), which measures the trust
  region in the norm :math:`\|p\|_{M^{-1}}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

from trustregion.core import _validation as v
from trustregion.core.status import Status, render
from trustregion.solvers._common import (
    kept_output,
    optimize_result,
    real_vector_output,
    scalar_output,
    wrap_callback,
)
from trustregion.solvers._subproblems import LocalModel, Step, failed
from trustregion.solvers._subproblems.dogleg import DoglegModel
from trustregion.solvers._subproblems.exact import ExactModel
from trustregion.solvers._subproblems.krylov import KrylovModel
from trustregion.solvers._subproblems.ncg import SteihaugModel

# ``OptimizeResult.status`` keeps scipy's integer codes where scipy has the outcome (0, 1, 2,
# 3 and 99 mean what they mean in scipy); the others continue its numbering. The shared
# :class:`~trustregion.Status` is in ``OptimizeResult.reason``.
SCIPY_STATUS_CODES: dict[Status, int] = {
    Status.CONVERGED: 0,
    Status.MAX_ITER: 1,
    Status.NO_PREDICTED_DECREASE: 2,
    Status.NEGATIVE_CURVATURE: 3,
    Status.NON_FINITE: 4,
    Status.STEP_TOO_SMALL: 5,
    Status.INDEFINITE_PRECONDITIONER: 6,
    Status.CALLBACK_STOP: 99,
}

METHODS = ("trust-ncg", "trust-krylov", "trust-exact", "dogleg")
_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)

# scipy's strings, verbatim, so code matching on them keeps working.
_SCIPY_MESSAGES = {
    Status.CONVERGED: "Optimization terminated successfully.",
    Status.MAX_ITER: "Maximum number of iterations has been exceeded.",
    Status.NO_PREDICTED_DECREASE: "A bad approximation caused failure to predict improvement.",
    Status.NEGATIVE_CURVATURE: "A linalg error occurred, such as a non-psd Hessian.",
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
# options beyond the common ones, per method (scipy's, then ours for trust-ncg)
_METHOD_OPTIONS = {
    "trust-ncg": ("cg_maxiter", "cg_rtol", "preconditioner"),
    "trust-krylov": ("inexact",),
    "trust-exact": ("subproblem_maxiter",),
    "dogleg": (),
}


@dataclass(frozen=True)
class TrustRegionOptions:
    """Validated options of a method (scipy's names and defaults first)."""

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
    inexact: bool = True
    subproblem_maxiter: int | None = None

    @classmethod
    def from_dict(
        cls, method: str, options: dict[str, Any] | None, tol: float | None
    ) -> TrustRegionOptions:
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict, got {type(options).__name__}")
        opts = dict(options or {})
        known = _SCIPY_OPTIONS + _METHOD_OPTIONS[method]
        unknown = sorted(set(opts) - set(known), key=str)
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {method!r}; known options are "
                f"{list(known)}"
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
        for name in ("maxiter", "cg_maxiter", "subproblem_maxiter"):
            if getattr(self, name) is not None:
                v.count(name, getattr(self, name), minimum=1)
        if self.cg_rtol is not None:
            v.nonnegative("cg_rtol", self.cg_rtol)
        if not isinstance(self.inexact, bool | np.bool_):
            raise TypeError(f"inexact must be True or False, got {self.inexact!r}")


class _Objective:
    """``fun``, ``jac`` and the Hessian of the user, with counts and checks.

    Every user function receives a fresh copy of ``x`` (as in scipy, gh-13740) so that it
    may keep or modify it. Outputs are checked once here and errors name the argument as the
    user passed it (``jac``, ``hess``, ``hessp``).
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
        self._pending_grad: tuple[np.ndarray, Any] | None = None
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
            self._pending_grad = (x.copy(), grad)
        return scalar_output("fun", out)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """``jac(x)`` as a float64 vector; a wrong shape or dtype raises."""
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
                grad = self.jac(x.copy(), *self.args)
        raw = grad
        grad = np.asarray(grad)
        if grad.size == self.n and grad.ndim != 1:
            grad = grad.reshape(self.n)  # scipy flattens the gradient
        out = real_vector_output("fun's gradient (jac=True)" if self._fun_and_grad else "jac",
                                 grad, self.n)  # fmt: skip
        # (the loop keeps g across later calls; with jac=True fun runs at every trial point)
        return kept_output(out, raw)

    def hessian_operator(self, x: np.ndarray, *, copy_vector: bool = True
                         ) -> Callable[[np.ndarray], np.ndarray]:
        """``p -> H(x) p``, counting products; ``hess(x)`` is evaluated once per point.

        ``hessp`` gets copies of ``x`` and, with ``copy_vector``, of ``p`` (the solver's own
        vector); ``steihaug_cg`` already hands its operator a copy, so its model passes
        False.
        """
        n = self.n
        if self.hessp is not None:
            hessp, args = self.hessp, self.args
            x_fixed = x.copy()

            def product(p: np.ndarray) -> np.ndarray:
                self.nhvp += 1
                return real_vector_output(
                    "hessp", hessp(x_fixed.copy(), p.copy() if copy_vector else p, *args), n)

            return product
        # After a rejected step the point is the same: reuse its Hessian (as scipy does).
        matvec = v.as_matvec("hess", self.hessian_at(x), n)

        def matrix_product(p: np.ndarray) -> np.ndarray:
            self.nhvp += 1
            return real_vector_output("hess", matvec(p), n)

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
        dtype = getattr(H, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind == "c":
            raise TypeError(
                f"hess returned a complex matrix (dtype {dtype}); it must return real numbers"
            )
        return H

    def hessian_at(self, x: np.ndarray) -> Any:
        """``hess(x)``, from the cache when ``x`` is the last point it was evaluated at."""
        if self._hess_cache is None or not np.array_equal(self._hess_cache[0], x):
            self._hess_cache = (x.copy(), self.hessian(x))
        return self._hess_cache[1]

    def dense_hessian_at(self, x: np.ndarray, method: str) -> np.ndarray:
        """``hess(x)`` as a float64 ndarray (a sparse matrix is densified)."""
        H = self.hessian_at(x)
        if hasattr(H, "toarray"):
            H = H.toarray()
        if isinstance(H, np.ndarray):
            H = np.asarray(H)  # an np.matrix would make every product 2-D
        else:
            raise TypeError(
                f"method {method!r} factorizes the Hessian: hess must return an ndarray or a "
                f"scipy.sparse matrix, got {type(H).__name__} (use 'trust-ncg' or "
                "'trust-krylov' for a LinearOperator)"
            )
        if H.dtype.kind not in "fiub":
            raise TypeError(f"hess must return real numbers, got dtype {H.dtype}")
        if H.shape != (self.n, self.n):
            raise ValueError(f"hess returned shape {H.shape}, expected ({self.n}, {self.n})")
        return H.astype(np.float64, copy=False)

    @property
    def nhev(self) -> int:
        """scipy's count: ``hessp`` calls, or ``hess`` evaluations when ``hess`` is given."""
        return self.n_hess_eval if self.hess is not None else self.nhvp


def _preconditioner(preconditioner: Any, n: int) -> Callable[[np.ndarray, np.ndarray], Any] | None:
    """The preconditioner as ``(x, r) -> M(x) r`` with checked output (real, shape (n,))."""
    if preconditioner is None:
        return None
    if callable(preconditioner) and not hasattr(preconditioner, "shape"):
        return preconditioner
    matvec = v.as_matvec("preconditioner", preconditioner, n)
    return lambda x, r: matvec(r)


def _model_factory(
    method: str, objective: _Objective, opts: TrustRegionOptions, args: tuple[Any, ...], n: int
) -> Callable[[np.ndarray, np.ndarray], LocalModel]:
    """``(x, g) -> local model`` of the method."""
    if method in ("trust-exact", "dogleg"):
        maxiter = 25 if opts.subproblem_maxiter is None else opts.subproblem_maxiter

        def dense(x: np.ndarray, g: np.ndarray) -> LocalModel:
            H = objective.dense_hessian_at(x, method)
            if not np.all(np.isfinite(H)):
                return _Failed(failed(n, Status.NON_FINITE, "hess"))
            if method == "dogleg":
                return DoglegModel(H, g)
            return ExactModel(H, g, maxiter=maxiter)

        return dense
    if method == "trust-krylov":

        def krylov(x: np.ndarray, g: np.ndarray) -> LocalModel:
            if not g.any():
                # g = 0 (reachable with gtol = 0) starts no Krylov space: the model predicts
                # no decrease, as trust-ncg's does there
                return _Failed(Step(np.zeros(n), False, 0.0))
            return KrylovModel(objective.hessian_operator(x), g, inexact=opts.inexact)

        return krylov
    preconditioner = _preconditioner(opts.preconditioner, n)
    cg_maxiter = 10 * n if opts.cg_maxiter is None else opts.cg_maxiter

    def steihaug(x: np.ndarray, g: np.ndarray) -> LocalModel:
        M = None
        if preconditioner is not None:
            x_fixed = x.copy()

            def M(r: np.ndarray) -> np.ndarray:
                out = preconditioner(x_fixed.copy(), r, *args)
                return real_vector_output("preconditioner", out, n)

        return SteihaugModel(
            objective.hessian_operator(x, copy_vector=False), g, rtol=opts.cg_rtol,
            maxiter=cg_maxiter, M=M,
        )

    return steihaug


@dataclass(frozen=True)
class _Failed:
    """A local model that could not be built (a non-finite Hessian, or g = 0 for GLTR): its
    one step ends the run."""

    step: Any

    def solve(self, radius: float) -> Any:
        return self.step


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; trustregion.minimize supports "
            f"{', '.join(repr(m) for m in METHODS)}"
        )
    return method.lower()


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
    r"""Minimize a smooth function by a trust-region method.

    Arguments, options and result follow ``scipy.optimize.minimize`` with the same
    ``method``; see the module docstring for the algorithm and what differs from scipy.

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
        ``hess(x, *args)`` returning an ``(n, n)`` ndarray, scipy.sparse matrix or (for
        ``trust-ncg`` and ``trust-krylov``) ``LinearOperator``; evaluated once per accepted
        point. Required by ``trust-exact`` and ``dogleg``.
    hessp : callable, optional
        ``hessp(x, p, *args) -> H(x) p``. ``trust-ncg`` and ``trust-krylov`` need exactly
        one of ``hess`` and ``hessp``.
    method : str
        ``"trust-ncg"`` (default), ``"trust-krylov"``, ``"trust-exact"`` or ``"dogleg"``
        (case-insensitive).
    tol : float, optional
        Sets ``gtol`` unless ``options`` gives it (scipy's rule).
    callback : callable, optional
        Called after each iteration as ``callback(xk)``, or as
        ``callback(intermediate_result=OptimizeResult(x=xk, fun=fk))`` when that is its only
        parameter. Raising ``StopIteration`` ends the run with status 99.
    options : dict, optional
        scipy's options, with scipy's defaults, for every method:

        - ``initial_trust_radius`` (1.0), ``max_trust_radius`` (1000.0): :math:`\Delta_0`,
          :math:`\Delta_{\max}`; ``0 < initial < max``.
        - ``eta`` (0.15): acceptance threshold on :math:`\rho`, in ``[0, 0.25)``.
        - ``gtol`` (1e-4): stop when :math:`\|g\|_2 <` ``gtol``.
        - ``maxiter`` (``200 n``), ``disp`` (False), ``return_all`` (False).

        ``trust-krylov``: ``inexact`` (True), scipy's: the subproblem tolerances relative
        to :math:`\|g\|` are :math:`\min(\tfrac12, \|g\|)` inside the region and
        :math:`\max(10^{-6}, \min(\tfrac12, \sqrt{\|g\|}))` on its boundary; False: 1e-8
        and 1e-6.

        ``trust-exact``: ``subproblem_maxiter`` (25), scipy's: factorizations per
        subproblem.

        ``trust-ncg``, ours:

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
        Hessian-vector products (products with a matrix ``hess`` included; 0 for the dense
        methods, which factorize instead), ``hess`` at ``x`` when ``hess`` is given, and
        ``allvecs`` with ``return_all``. ``x``, ``fun`` and ``jac`` are never NaN.

    Raises
    ------
    ValueError, TypeError
        Non-finite ``fun`` or ``jac`` at ``x0``; wrong shapes or complex values from
        ``jac``, ``hess``, ``hessp`` or the preconditioner; neither or both of ``hess`` and
        ``hessp``, or ``hessp`` alone for ``trust-exact``/``dogleg``; unknown or invalid
        options; an unknown method (the message lists the supported ones).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod
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

    The dense methods take the Hessian matrix:

    >>> res = tr.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
    ...                   method="trust-exact")
    >>> res.status, bool(np.allclose(res.x, 1.0, atol=1e-6))
    (0, True)
    """
    method = _check_method(method)
    x = np.atleast_1d(np.asarray(x0))
    x = v.float_vector("x0", x).astype(np.float64)
    n = x.shape[0]
    args = tuple(args) if isinstance(args, tuple | list) else (args,)
    opts = TrustRegionOptions.from_dict(method, options, tol)
    if method in ("trust-exact", "dogleg") and hess is None:
        raise ValueError(
            f"method {method!r} needs hess, a function returning the Hessian matrix"
            + (
                "; with only hessp use 'trust-ncg' or 'trust-krylov'"
                if hessp is not None
                else " (got neither hess nor hessp)"
            )
        )
    objective = _Objective(fun, jac, hess, hessp, args, n)
    notify = wrap_callback(callback)

    f = objective.value(x)
    if not np.isfinite(f):
        raise ValueError(f"fun(x0) must be finite, got {f}")
    g = v.float_vector("jac(x0)", objective.gradient(x))  # raises if not finite
    make_model = _model_factory(method, objective, opts, args, n)
    return _trust_region_loop(objective, x, f, g, make_model, opts, notify)


def _trust_region_loop(
    objective: _Objective,
    x: np.ndarray,
    f: float,
    g: np.ndarray,
    make_model: Callable[[np.ndarray, np.ndarray], LocalModel],
    opts: TrustRegionOptions,
    notify: Callable[[OptimizeResult], Any] | None,
) -> OptimizeResult:
    """The outer loop (scipy's ``_minimize_trust_region``), independent of the subproblem."""
    maxiter = 200 * x.shape[0] if opts.maxiter is None else opts.maxiter
    radius = float(opts.initial_trust_radius)
    radius_floor = max(_EPS * _EPS * radius, _TINY)
    allvecs = [x.copy()] if opts.return_all else None
    status = Status.CONVERGED
    detail: dict[str, Any] = {}
    k = 0
    g_norm = float(np.linalg.norm(g))
    nonfinite_trials = 0  # consecutive trial points where fun was not finite
    model = make_model(x, g) if g_norm >= opts.gtol else None
    while model is not None and g_norm >= opts.gtol:
        step = model.solve(radius)
        if step.stop is not None:
            status = step.stop
            detail["what"] = step.what
            break
        predicted = step.predicted_reduction
        # A predicted decrease below the rounding error of the model evaluated around f,
        # f + g^T p + ..., about eps (|f| + |g| |p|), cannot be told from noise, and neither
        # can the actual decrease: rho would be rounding. scipy meets this when its m(p)
        # rounds to f or above (status 2, on ill-conditioned problems that cannot reach
        # gtol); testing it here says so about when scipy does, without its dependence on
        # how the rounding falls. A step that no longer changes x is STEP_TOO_SMALL.
        noise = 2.0 * _EPS * (abs(f) + g_norm * math.sqrt(float(step.p @ step.p)))
        x_trial = x + step.p
        # At x = 0 every step changes x: there, a radius eps^2 times the initial one is
        # nothing (the subproblem solvers would otherwise meet a radius that underflows).
        if (
            not predicted > noise
            or not (x_trial != x).any()
            or radius < radius_floor
        ):
            status = (
                Status.NO_PREDICTED_DECREASE if not predicted > noise else Status.STEP_TOO_SMALL
            )
            if nonfinite_trials:  # the region shrank to nothing around non-finite values
                status = Status.NON_FINITE
                detail["what"] = (
                    f"fun (at every trial point for the last {nonfinite_trials} iterations, "
                    "until the step was too small to measure a decrease)"
                )
            break
        f_trial = objective.value(x_trial)
        if math.isfinite(f_trial):
            nonfinite_trials = 0
            rho = (f - f_trial) / predicted
        else:  # outside fun's domain: a rejected step, as scipy treats f = +inf
            nonfinite_trials += 1
            rho = -np.inf
        if rho < 0.25:
            radius *= 0.25
        elif rho > 0.75 and step.hits_boundary:
            radius = min(2.0 * radius, opts.max_trust_radius)
        if rho > opts.eta:
            g_trial = objective.gradient(x_trial)
            if not np.isfinite(g_trial).all():
                status = Status.NON_FINITE
                detail["what"] = "jac (at an accepted point)"
                break
            x, f, g = x_trial, f_trial, g_trial
            g_norm = math.sqrt(float(g @ g))
            if g_norm >= opts.gtol:
                model = make_model(x, g)
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
