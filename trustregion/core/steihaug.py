r"""Steihaug-Toint truncated conjugate gradient for the trust-region subproblem.

Solves approximately

.. math::  \min_p\; m(p) = g^T p + \tfrac12 p^T H p \quad\text{s.t.}\quad \|p\| \le \Delta

with CG started at ``p = 0`` (Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
Algorithm 7.2). CG is stopped early when it leaves the region, meets non-positive
curvature, reaches the residual tolerance or the iteration cap.

The model is tracked through the CG recurrences (``H z`` equals ``r - g``), so choosing
between the two boundary points on negative curvature costs no Hessian-vector product.

With a preconditioner :math:`M \approx H^{-1}` the region becomes the ellipsoid
:math:`\|p\|_{M^{-1}} = \sqrt{p^T M^{-1} p} \le \Delta` and CG becomes preconditioned CG
(Conn, Gould & Toint, *Trust-Region Methods*, 2000, Algorithm 7.5.1). Only products with
:math:`M` are needed: the :math:`M^{-1}`-norms of the iterates follow from the recurrences
(Steihaug 1983)

.. math::

    \|z_{j+1}\|^2 = \|z_j\|^2 + 2\alpha_j \langle z_j, d_j\rangle + \alpha_j^2 \|d_j\|^2,\quad
    \langle z_{j+1}, d_{j+1}\rangle = \beta_j (\langle z_j, d_j\rangle + \alpha_j \|d_j\|^2),\quad
    \|d_{j+1}\|^2 = r_{j+1}^T y_{j+1} + \beta_j^2 \|d_j\|^2,

all in the :math:`M^{-1}` inner product, with :math:`y = M r`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustregion.core import _validation as v
from trustregion.core._pow2 import ldexp as _ldexp
from trustregion.core._pow2 import times_pow2 as _times_pow2
from trustregion.core.status import Status, render

# What steihaug_cg measured, per status; render() appends the remedy.
_WHAT_HAPPENED = {
    Status.CONVERGED: "converged inside the trust region",
    Status.BOUNDARY: "stopped on the trust-region boundary",
    Status.NEGATIVE_CURVATURE: "negative curvature: followed the direction to the boundary",
    Status.MAX_ITER: "iteration cap reached inside the trust region",
    Status.NON_FINITE: (
        "hessp or the preconditioner returned a non-finite value; last good iterate returned"
    ),
    Status.INDEFINITE_PRECONDITIONER: (
        "r^T M r <= 0: the preconditioner is not positive definite; last good iterate returned"
    ),
    Status.OUT_OF_RANGE: (
        "the scales of g, radius and hessp are too far apart for the floating-point type "
        "(the step or the region does not fit it); the step is zero"
    ),
}
# On the boundary and along negative curvature are answers of the subproblem, not failures.
_SUCCESS = frozenset({Status.CONVERGED, Status.BOUNDARY, Status.NEGATIVE_CURVATURE})


@dataclass(frozen=True, eq=False)
class SteihaugResult:
    """Outcome of :func:`steihaug_cg`.

    Attributes
    ----------
    p : ndarray
        The step, with ``||p|| <= radius`` up to rounding (``||p||_{M^{-1}}`` with a
        preconditioner).
    nit : int
        CG iterations made.
    nhev : int
        Calls to ``hessp`` (calls to the preconditioner are not counted).
    status : Status
        Why it stopped: ``CONVERGED`` (inside the region), ``BOUNDARY``,
        ``NEGATIVE_CURVATURE`` (followed to the boundary), ``MAX_ITER``, ``NON_FINITE``,
        ``INDEFINITE_PRECONDITIONER`` or ``OUT_OF_RANGE`` (the problem is too badly scaled
        for the dtype: the step would overflow, or lies on a boundary that does not fit).
    success : bool
        True for ``CONVERGED``, ``BOUNDARY`` and ``NEGATIVE_CURVATURE``: ``p`` solves the
        subproblem as Steihaug's method defines it.
    hits_boundary : bool
        True when ``p`` lies on the boundary (``BOUNDARY`` or ``NEGATIVE_CURVATURE``).
    predicted_reduction : float
        ``m(0) - m(p) = -(g^T p + 1/2 p^T H p)``, computed without an extra ``hessp`` call.
    residual_norm : float
        ``||g + H p||``, the model gradient at ``p`` (from the tracked ``H p``).
    message : str
        What happened and what to try.
    """

    p: np.ndarray
    nit: int
    nhev: int
    status: Status
    success: bool
    hits_boundary: bool
    predicted_reduction: float
    residual_norm: float
    message: str


def boundary_intersections(z: np.ndarray, d: np.ndarray, radius: float) -> tuple[float, float]:
    r"""Roots ``ta <= tb`` of :math:`\|z + t d\| = \Delta` for ``||z|| <= Δ``.

    Solves :math:`a t^2 + b t + c = 0` with :math:`a = d^Td`, :math:`b = 2 z^Td`,
    :math:`c = z^Tz - \Delta^2 \le 0` by the cancellation-free pair
    :math:`q = -\tfrac12 (b + \operatorname{sign}(b)\sqrt{b^2 - 4ac})`, :math:`t_1 = q/a`,
    :math:`t_2 = c/q`, so that neither root loses digits when ``b^2 >> |ac|``.

    Examples
    --------
    >>> import numpy as np
    >>> ta, tb = boundary_intersections(np.zeros(2), np.array([3.0, 4.0]), 10.0)
    >>> float(ta), float(tb)
    (-2.0, 2.0)
    """
    return _sphere_roots(
        float(np.dot(d, d)), float(np.dot(z, d)), float(np.dot(z, z)), radius
    )


def _sphere_roots(dd: float, zd: float, zz: float, radius: float) -> tuple[float, float]:
    """Roots of ``||z + t d||^2 = radius^2`` from the inner products (any inner product)."""
    a = dd
    b = 2.0 * zd
    c = zz - radius * radius
    # c <= 0 in exact arithmetic (z is inside); rounding can push it over, so clamp.
    c = min(c, 0.0)
    sqrt_disc = np.sqrt(b * b - 4.0 * a * c)
    q = -0.5 * (b + np.copysign(sqrt_disc, b))
    if q == 0.0:  # z = 0 on a zero-radius region: both roots are 0
        return 0.0, 0.0
    t1, t2 = q / a, c / q
    return (t1, t2) if t1 <= t2 else (t2, t1)


def _safe_norm(u: np.ndarray) -> float:
    """``||u||`` without overflow or underflow of the squares (computed in float64)."""
    m = float(np.max(np.abs(u)))
    if m == 0.0:
        return 0.0
    e = math.frexp(m)[1]
    scaled = _times_pow2(u, -e)
    return _ldexp(math.sqrt(float(np.dot(scaled, scaled))), e)


def steihaug_cg(
    hessp: Callable[[np.ndarray], Any],
    g: Any,
    radius: float,
    *,
    rtol: float | None = None,
    maxiter: int | None = None,
    M: Any = None,
) -> SteihaugResult:
    r"""Approximately minimize :math:`g^Tp + \tfrac12 p^THp` over :math:`\|p\| \le \Delta`.

    Runs CG on :math:`Hp = -g` from :math:`p = 0` and stops at the first of

    - :math:`\|r_j\| \le \varepsilon`, :math:`\varepsilon = \mathrm{rtol}\,\|g\|`, or by default
      the forcing term :math:`\min(\tfrac12, \sqrt{\|g\|})\,\|g\|` (superlinear convergence
      of the outer Newton iteration, as scipy's ``trust-ncg``) -> ``CONVERGED``;
    - :math:`d_j^T H d_j \le 0`: the boundary point :math:`z_j + \tau d_j` with the lower model
      value -> ``NEGATIVE_CURVATURE``;
    - :math:`\|z_{j+1}\| \ge \Delta`: the boundary point :math:`z_j + \tau d_j`, :math:`\tau \ge 0`
      -> ``BOUNDARY``;
    - ``maxiter`` iterations -> ``MAX_ITER`` (scipy's loop has no cap and can spin forever).

    Along :math:`z + t d` the model changes by :math:`t\, r^T d + \tfrac12 t^2 d^T H d`
    (with :math:`r = g + Hz`), which picks the better boundary point without the two extra
    Hessian-vector products scipy spends.

    The model decrease is at least that of the Cauchy point (the first CG step is the
    steepest-descent step, and every later step decreases the model further).

    With a preconditioner ``M`` (:math:`\approx H^{-1}`, symmetric positive definite) this is
    preconditioned CG and every norm above that measures the step becomes
    :math:`\|p\|_{M^{-1}} = \sqrt{p^T M^{-1} p}`: the region is an ellipsoid shaped like
    :math:`H` where :math:`M^{-1} \approx H`, and the first step is the preconditioned
    steepest-descent step :math:`-M g`. The residual test stays Euclidean. With ``M = I`` the
    iterates are those of the unpreconditioned method.

    Parameters
    ----------
    hessp : callable
        ``hessp(v) -> H v`` for the symmetric matrix ``H``.
    g : array_like, shape (n,)
        Gradient of the model at 0; must be finite.
    radius : float
        Trust-region radius :math:`\Delta > 0`.
    rtol : float, optional
        Relative residual tolerance; the forcing term above when None.
    maxiter : int, optional
        Iteration cap, ``2 n`` by default.
    M : callable, ndarray, scipy.sparse matrix or LinearOperator, optional
        Preconditioner approximating :math:`H^{-1}` (applied as ``M(r)`` or ``M @ r``); it
        must be symmetric positive definite. ``r^T M r <= 0`` stops with
        ``INDEFINITE_PRECONDITIONER``.

    Returns
    -------
    SteihaugResult

    Examples
    --------
    >>> import numpy as np
    >>> H = np.diag([2.0, 1.0])
    >>> res = steihaug_cg(H.dot, np.array([1.0, 1.0]), radius=10.0, rtol=1e-10)
    >>> res.status.name, np.allclose(res.p, [-0.5, -1.0])
    ('CONVERGED', True)
    >>> res = steihaug_cg(np.diag([1.0, -1.0]).dot, np.array([1.0, 1e-3]), radius=2.0, rtol=1e-8)
    >>> res.status.name, bool(np.isclose(np.linalg.norm(res.p), 2.0))
    ('NEGATIVE_CURVATURE', True)

    With the exact inverse as preconditioner, the first step is the Newton step, and the
    region is measured in the :math:`H`-norm:

    >>> H = np.diag([100.0, 1.0]); g = np.array([1.0, 1.0])
    >>> res = steihaug_cg(H.dot, g, radius=0.5, M=np.linalg.inv(H))
    >>> res.status.name, res.nit, bool(np.isclose(res.p @ H @ res.p, 0.5**2))
    ('BOUNDARY', 1, True)
    >>> newton = -np.linalg.solve(H, g)
    >>> bool(np.allclose(res.p, newton * 0.5 / np.sqrt(newton @ H @ newton)))
    True
    """
    g = v.float_vector("g", g)
    n = g.shape[0]
    dtype = g.dtype
    radius = v.positive("radius", radius)
    if rtol is not None:
        rtol = v.nonnegative("rtol", rtol)
    maxiter = 2 * n if maxiter is None else v.count("maxiter", maxiter, minimum=1)
    v.function("hessp", hessp)
    psolve = None if M is None else v.as_matvec("M", M, n, vector="g")

    # Scale safety: a gradient or radius far from unit scale would overflow or underflow the
    # squared norms below (g = 1e200 gave "converged" with p = 0). The subproblem is then
    # solved for g' = 2^k_g g, H' = 2^(k_g + e_s) H, radius' = radius 2^-e_s, with p = p' 2^e_s
    # (substitute p = 2^e_s p' and multiply the model by 2^(k_g - e_s)): powers of two, so
    # exact. k_g = -e_g and e_s = e_r bring ||g'|| and radius' near 1. The three factors must
    # stay consistent: clamping them separately solved another problem (g = 1e-300, H = I,
    # radius = 1e300 gave p = -0.08 instead of -g).
    window = 200 if dtype == np.float64 else 25
    with np.errstate(over="ignore", under="ignore"):
        gg = float(np.dot(g, g))
    lo_sq, hi_sq = math.ldexp(1.0, -2 * window), math.ldexp(1.0, 2 * window)
    e_g = e_r = 0
    k_g = e_s = k_H = 0
    radius_capped = False
    if not (lo_sq < gg < hi_sq) or not (
        math.ldexp(1.0, -window) < radius < math.ldexp(1.0, window)
    ):
        if np.any(g):
            e_g = math.frexp(float(np.max(np.abs(g))))[1]
            e_r = math.frexp(radius)[1]
    scaled = bool(e_g or e_r)
    if scaled:
        limit = 1000 if dtype == np.float64 else 120
        g_true_norm = _safe_norm(g)
        k_g, e_s = -e_g, e_r
        k_H = k_g + e_s
        if k_H > limit:
            # 2^k_H does not fit the dtype, and H' would overflow for an H of unit scale
            # (a subnormal g on radius 1): take a smaller unit for p instead, which makes
            # radius' larger than 1 (CG then typically converges well inside it).
            k_H = limit
            e_s = k_H - k_g
        # (k_H < -limit needs no such care: an H' that underflows is negligible next to
        # g' and radius' of unit scale, and _times_pow2 applies 2^k_H exactly otherwise.)
        g = _times_pow2(g, k_g).astype(dtype)
        radius = _ldexp(radius, -e_s)
        if radius > math.ldexp(1.0, window):
            # radius'^2 would overflow: cap it. A step that stays inside is unaffected; one
            # that reaches the capped boundary is reported OUT_OF_RANGE in finish().
            radius = math.ldexp(1.0, window)
            radius_capped = True
        user_hessp = hessp
        if -limit <= k_H:
            c_H = dtype.type(math.ldexp(1.0, k_H))

            def hessp(u: np.ndarray) -> np.ndarray:  # the rescaled operator H'
                return v.matvec_output("hessp", user_hessp(u), n, dtype) * c_H
        else:

            def hessp(u: np.ndarray) -> np.ndarray:  # the rescaled operator H'
                Hu = v.matvec_output("hessp", user_hessp(u), n, dtype)
                with np.errstate(under="ignore"):
                    return _times_pow2(Hu, k_H).astype(dtype)

        gg = float(np.dot(g, g))
        g_norm = math.sqrt(gg)
        factor = min(0.5, math.sqrt(g_true_norm)) if rtol is None else rtol
    else:
        g_norm = math.sqrt(gg)
        factor = min(0.5, np.sqrt(g_norm)) if rtol is None else rtol
    tol = factor * g_norm

    z = np.zeros(n, dtype=dtype)
    Hz = np.zeros(n, dtype=dtype)
    r = g.copy()  # r = g + H z, the model gradient at z
    rr = float(np.dot(r, r))
    nhev = 0

    def finish(status: Status, p: np.ndarray, Hp: np.ndarray, nit: int) -> SteihaugResult:
        reduction = -(float(np.dot(g, p)) + 0.5 * float(np.dot(p, Hp)))
        residual = float(np.linalg.norm(g + Hp))
        if scaled:
            # back to the caller's units: p = p' 2^e_s, m(p) = m'(p') 2^(e_s - k_g),
            # g + H p = (g' + H' p') 2^-k_g
            with np.errstate(over="ignore", under="ignore"):
                p = p * dtype.type(2.0) ** e_s if abs(e_s) < 120 else (
                    _times_pow2(p, e_s).astype(dtype)
                )
            reduction = _ldexp(reduction, e_s - k_g)
            residual = _ldexp(residual, -k_g)
            on_capped_boundary = radius_capped and status in (
                Status.BOUNDARY, Status.NEGATIVE_CURVATURE
            )
            if on_capped_boundary or not np.all(np.isfinite(p)):
                # the boundary point of the capped region is not the caller's, or the step
                # overflows the dtype (float32 on a radius of 1e300): no step to give
                return SteihaugResult(
                    p=np.zeros(n, dtype=dtype),
                    nit=nit,
                    nhev=nhev,
                    status=Status.OUT_OF_RANGE,
                    success=False,
                    hits_boundary=False,
                    predicted_reduction=0.0,
                    residual_norm=_ldexp(float(np.linalg.norm(g)), -k_g),
                    message=render(Status.OUT_OF_RANGE, _WHAT_HAPPENED[Status.OUT_OF_RANGE]),
                )
        return SteihaugResult(
            p=p,
            nit=nit,
            nhev=nhev,
            status=status,
            success=status in _SUCCESS,
            hits_boundary=status in (Status.BOUNDARY, Status.NEGATIVE_CURVATURE),
            predicted_reduction=reduction,
            residual_norm=residual,
            message=render(status, _WHAT_HAPPENED[status]),
        )

    if np.sqrt(rr) <= tol:
        return finish(Status.CONVERGED, z, Hz, 0)

    # Preconditioned state: y = M r, ry = r^T y, and the M^{-1} inner products of z and d.
    # Without a preconditioner ry = rr and the norms are computed directly, as scipy does.
    if psolve is None:
        d = -r
        ry = rr
    else:
        y = v.matvec_output("M", psolve(r), n, dtype)
        ry = float(np.dot(r, y))
        if not np.isfinite(ry):
            return finish(Status.NON_FINITE, z, Hz, 0)
        if ry <= 0.0:
            return finish(Status.INDEFINITE_PRECONDITIONER, z, Hz, 0)
        d = -y
    zz_w, zd_w, dd_w = 0.0, 0.0, ry  # <z,z>, <z,d>, <d,d> in the M^{-1} inner product

    # On a rescaled problem, a trial point far outside the region may overflow its norm:
    # that says "outside", which is the right answer, so the warning is silenced there.
    quiet = np.errstate(over="ignore", under="ignore") if scaled else contextlib.nullcontext()
    with quiet:
        for j in range(maxiter):
            # hessp gets a copy: one that scales its argument in place would corrupt d
            Hd = v.matvec_output("hessp", hessp(d.copy()), n, dtype)
            nhev += 1
            dHd = float(np.dot(d, Hd))
            if not np.isfinite(dHd):
                return finish(Status.NON_FINITE, z, Hz, j)
            if dHd <= 0.0:
                if psolve is None:
                    ta, tb = boundary_intersections(z, d, radius)
                else:
                    ta, tb = _sphere_roots(dd_w, zd_w, zz_w, radius)
                rd = float(np.dot(r, d))
                # model change along z + t d relative to m(z)
                change_a = ta * rd + 0.5 * ta * ta * dHd
                change_b = tb * rd + 0.5 * tb * tb * dHd
                tau = ta if change_a < change_b else tb
                p = z + tau * d
                return finish(Status.NEGATIVE_CURVATURE, p, Hz + tau * Hd, j + 1)
            alpha = ry / dHd
            if psolve is None:
                z_next = z + alpha * d
                outside = float(np.linalg.norm(z_next)) >= radius
            else:
                zz_w_next = zz_w + 2.0 * alpha * zd_w + alpha * alpha * dd_w
                outside = np.sqrt(zz_w_next) >= radius
            if outside:
                if psolve is None:
                    _, tb = boundary_intersections(z, d, radius)
                else:
                    _, tb = _sphere_roots(dd_w, zd_w, zz_w, radius)
                p = z + tb * d
                return finish(Status.BOUNDARY, p, Hz + tb * Hd, j + 1)
            if psolve is None:
                z = z_next
            else:
                z = z + alpha * d
                zz_w = zz_w_next
            Hz = Hz + alpha * Hd
            r = r + alpha * Hd
            rr_next = float(np.dot(r, r))
            if np.sqrt(rr_next) <= tol:
                return finish(Status.CONVERGED, z, Hz, j + 1)
            if psolve is None:
                d = -r + (rr_next / rr) * d
                ry = rr_next
            else:
                y = v.matvec_output("M", psolve(r), n, dtype)
                ry_next = float(np.dot(r, y))
                if not np.isfinite(ry_next):
                    return finish(Status.NON_FINITE, z, Hz, j + 1)
                if ry_next <= 0.0:
                    return finish(Status.INDEFINITE_PRECONDITIONER, z, Hz, j + 1)
                beta = ry_next / ry
                zd_w = beta * (zd_w + alpha * dd_w)
                dd_w = ry_next + beta * beta * dd_w
                d = -y + beta * d
                ry = ry_next
            rr = rr_next
        return finish(Status.MAX_ITER, z, Hz, maxiter)
