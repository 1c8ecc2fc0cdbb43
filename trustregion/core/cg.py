"""Matrix-free (preconditioned) conjugate gradient.

The loop follows Hestenes & Stiefel in the same arithmetic order as
``scipy.sparse.linalg.cg`` so that, on symmetric positive definite problems,
the iterates agree with scipy's to rounding. What it adds is what an optimizer
needs from CG: a status instead of a bare ``info`` integer, detection of
non-positive curvature (``p^T A p <= 0``) with the direction that showed it,
non-finite matvec output reported instead of propagated, Tikhonov damping
without wrapping the operator, and the residual history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core.status import Status, render
from trustregion.kernels import linalg as _k

# What cg measured, per status; render() appends the remedy (trustregion.core.status).
_WHAT_HAPPENED = {
    Status.CONVERGED: "converged: residual norm {res:.3e} <= tolerance {tol:.3e}",
    Status.MAX_ITER: (
        "iteration limit {nit} reached with residual norm {res:.3e} > tolerance {tol:.3e}"
    ),
    Status.NEGATIVE_CURVATURE: (
        "non-positive curvature p^T A p = {curv:.3e} at iteration {nit}: A is not positive "
        "definite (indefinite, or singular with b outside its range); the last good iterate "
        "is returned and `direction` holds p"
    ),
    Status.NON_FINITE: (
        "the {where} returned a non-finite value at iteration {nit}; the last good iterate "
        "is returned"
    ),
    Status.INDEFINITE_PRECONDITIONER: (
        "r^T M r = {curv:.3e} <= 0 at iteration {nit}: the preconditioner M is not positive "
        "definite; the last good iterate is returned"
    ),
}


@dataclass(frozen=True, eq=False)
class CGResult:
    """Outcome of :func:`cg`.

    Attributes
    ----------
    x : ndarray
        The last good iterate (never contains NaN).
    nit : int
        Number of completed iterations (updates of ``x``).
    n_matvec : int
        Number of calls to the matvec ``A``.
    residual_norm : float
        ``||r||`` of the recurrence residual at ``x`` (``b - (A + damping I) x`` in exact
        arithmetic).
    residual_history : ndarray
        ``||r||`` before the first iteration and after each iteration, length ``nit + 1``.
    success : bool
        True exactly when ``status`` is ``CONVERGED``.
    status : Status
        Why the iteration stopped: ``CONVERGED``, ``MAX_ITER``, ``NEGATIVE_CURVATURE``,
        ``NON_FINITE`` or ``INDEFINITE_PRECONDITIONER``.
    message : str
        What happened and what to try.
    direction : ndarray or None
        With ``NEGATIVE_CURVATURE``: the search direction ``p`` with ``p^T A p <= 0``.
    curvature : float or None
        With ``NEGATIVE_CURVATURE`` or ``INDEFINITE_PRECONDITIONER``: the offending value.
    """

    x: np.ndarray
    nit: int
    n_matvec: int
    residual_norm: float
    residual_history: np.ndarray
    success: bool
    status: Status
    message: str
    direction: np.ndarray | None = None
    curvature: float | None = None


_EPS = {np.float64: float(np.finfo(np.float64).eps), np.float32: float(np.finfo(np.float32).eps)}


def _checked(out: Any, name: str, n: int, dtype: np.dtype, shape: tuple[int]) -> np.ndarray:
    """The operator's output as a contiguous vector of ``dtype``; a fast path when it already is."""
    if type(out) is np.ndarray and out.dtype == dtype and out.shape == shape:
        if out.flags.c_contiguous:
            return out
    return np.ascontiguousarray(v.matvec_output(name, out, n, dtype))


def cg(
    A: Any,
    b: Any,
    *,
    x0: Any = None,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    M: Any = None,
    damping: float = 0.0,
    callback: Callable[[np.ndarray], Any] | None = None,
) -> CGResult:
    r"""Solve :math:`(A + \lambda I)\,x = b` by (preconditioned) conjugate gradient.

    With :math:`r_0 = b - (A+\lambda I) x_0`, :math:`z_0 = M r_0`, :math:`p_0 = z_0`, each
    iteration computes

    .. math::

        \alpha_k = \frac{r_k^T z_k}{p_k^T (A+\lambda I) p_k},\quad
        x_{k+1} = x_k + \alpha_k p_k,\quad
        r_{k+1} = r_k - \alpha_k (A+\lambda I) p_k,\\
        z_{k+1} = M r_{k+1},\quad
        p_{k+1} = z_{k+1} + \frac{r_{k+1}^T z_{k+1}}{r_k^T z_k} p_k,

    and stops as soon as :math:`\|r_k\| \le \max(\mathrm{rtol}\,\|b\|, \mathrm{atol})`
    (including on the last allowed iteration, which scipy reports as a failure).

    Parameters
    ----------
    A : callable, ndarray, scipy.sparse matrix or LinearOperator
        The symmetric operator. A callable receives a vector of ``b``'s dtype and must
        return a vector of the same length.
    b : array_like, shape (n,)
        Right-hand side; float32 stays float32, float64 stays float64.
    x0 : array_like, shape (n,), optional
        Starting point, zero by default.
    rtol, atol : float
        Relative and absolute residual tolerances (>= 0).
    maxiter : int, optional
        Iteration limit, ``10 * n`` by default (as scipy).
    M : callable, ndarray, scipy.sparse matrix or LinearOperator, optional
        Preconditioner approximating :math:`(A+\lambda I)^{-1}`; must be symmetric positive
        definite.
    damping : float
        :math:`\lambda \ge 0`, added to ``A`` without wrapping it.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration (on a view: copy it to keep it).

    Returns
    -------
    CGResult
        ``x``, ``nit``, ``residual_norm``, ``status``, ``message`` and more. Expected outcomes
        (iteration limit, non-positive curvature, non-finite matvec output) are statuses;
        misuse raises.

    Raises
    ------
    ValueError, TypeError
        Non-finite or wrongly shaped ``b`` or ``x0``, negative tolerances or damping, an
        operator of the wrong shape, or a matvec that returns the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> import trustregion as tr
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = tr.cg(A, np.array([1.0, 2.0]), rtol=1e-12)
    >>> res.status.name, res.nit
    ('CONVERGED', 2)
    >>> np.allclose(A @ res.x, [1.0, 2.0])
    True

    An indefinite operator is reported, not silently "solved":

    >>> tr.cg(np.diag([1.0, -1.0]), np.ones(2)).status.name
    'NEGATIVE_CURVATURE'
    """
    b = v.float_vector("b", b)
    n = b.shape[0]
    dtype = b.dtype
    rtol = v.nonnegative("rtol", rtol)
    atol = v.nonnegative("atol", atol)
    damping = v.nonnegative("damping", damping)
    maxiter = 10 * n if maxiter is None else v.count("maxiter", maxiter)
    matvec = v.as_matvec("A", A, n)
    psolve = None if M is None else v.as_matvec("M", M, n)

    if x0 is None:
        x = np.zeros(n, dtype=dtype)
        r = b.copy()
        n_matvec = 0
    else:
        x = v.float_vector("x0", x0).astype(dtype, copy=True)
        if x.shape != b.shape:
            raise ValueError(f"x0 must have shape {b.shape} like b, got {x.shape}")
        Ax = v.matvec_output("A", matvec(x), n, dtype)
        n_matvec = 1
        if damping:
            Ax = Ax + damping * x
        if not np.all(np.isfinite(Ax)):
            raise ValueError("A @ x0 is not finite: check A and x0")
        r = b - Ax

    tol = max(rtol * math.sqrt(float(np.dot(b, b))), atol)
    rr = float(np.dot(r, r))
    history = [rr]  # squared residual norms; square roots taken once at the end

    def finish(status: Status, nit: int, **extra: Any) -> CGResult:
        res = math.sqrt(history[-1])
        fmt = dict(res=res, tol=tol, nit=nit, curv=extra.get("curvature") or 0.0)
        fmt["where"] = extra.pop("where", "matvec")
        return CGResult(
            x=x,
            nit=nit,
            n_matvec=n_matvec,
            residual_norm=float(res),
            residual_history=np.sqrt(history),
            success=status is Status.CONVERGED,
            status=status,
            message=render(status, _WHAT_HAPPENED[status].format(**fmt)),
            **extra,
        )

    if math.sqrt(rr) <= tol:
        return finish(Status.CONVERGED, 0)

    # A direction whose Rayleigh quotient p^T A p / p^T p is below eps times the largest one
    # seen so far is numerically in the null space: treat it as zero curvature (singular A).
    eps = _EPS[dtype.type]
    null_threshold = 0.0
    tol_sq = tol * tol
    shape = b.shape
    p = np.empty(n, dtype=dtype)
    pp = rho_prev = 1.0
    # The loop is the hot path for cheap operators: locals instead of attribute lookups,
    # and the operator output is checked with a fast path before the full validation.
    dot, update_direction, update_iterate = np.dot, _k.update_direction, _k.update_iterate
    add_scaled = _k.add_scaled
    q_damped = np.empty(n, dtype=dtype) if damping else p
    damping_typed = dtype.type(damping)  # so float32 arithmetic stays float32, as in NumPy
    for k in range(maxiter):
        if psolve is None:
            z, rho = r, rr
        else:
            z = _checked(psolve(r), "M", n, dtype, shape)
            rho = float(dot(r, z))
            if not math.isfinite(rho):
                return finish(Status.NON_FINITE, k, where="preconditioner M")
            if rho <= 0.0:
                return finish(Status.INDEFINITE_PRECONDITIONER, k, curvature=rho)
        if k:
            beta = rho / rho_prev
            update_direction(p, z, beta)
            # ||p||^2 only sets the null-space threshold, so a cheap estimate will do:
            # without preconditioning r_{k+1} is orthogonal to p_k, so
            # ||p_{k+1}||^2 = ||r_{k+1}||^2 + beta^2 ||p_k||^2.
            pp = rr + beta * beta * pp if psolve is None else _k.dot(p, p)
        else:
            p[:] = z
            pp = _k.dot(p, p)
        q = matvec(p)
        if type(q) is not np.ndarray or q.shape != shape or q.dtype != dtype:
            q = _checked(q, "A", n, dtype, shape)
        n_matvec += 1
        if damping:
            # into our own buffer, not in place: q may be the caller's own array
            add_scaled(q_damped, q, p, damping_typed)
            q = q_damped
        pq = float(dot(p, q))
        if not (null_threshold * pp < pq < math.inf):  # also false for NaN
            if math.isnan(pq) or pq == math.inf:
                return finish(Status.NON_FINITE, k)
            return finish(Status.NEGATIVE_CURVATURE, k, direction=p.copy(), curvature=pq)
        if pq * eps > null_threshold * pp:
            null_threshold = eps * pq / pp
        alpha = rho / pq
        update_iterate(x, r, p, q, alpha)
        rr = float(dot(r, r))
        rho_prev = rho
        history.append(rr)
        if callback is not None:
            callback(x)
        if rr <= tol_sq:
            return finish(Status.CONVERGED, k + 1)
    return finish(Status.MAX_ITER, maxiter)
