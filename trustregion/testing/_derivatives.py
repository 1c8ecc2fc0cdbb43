r"""Checks of derivatives and of derivative-like operators against finite differences.

Each check draws its directions from ``numpy.random.default_rng(seed)``, compares the
function under test with a Richardson-extrapolated central difference (see
:mod:`trustregion.testing._differences`), and raises an ``AssertionError`` that names the
check, the direction and seed, the error found, the tolerance and where it came from.
Each returns a :class:`CheckReport` with the calls it spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from trustregion.testing import _differences as fd
from trustregion.testing._report import (
    CheckReport,
    Counted,
    as_float_array,
    count_argument,
    reject_complex,
    require_finite,
    vector_argument,
)

#: multiples of n eps allowed for inner products computed two ways (symmetry, dot tests)
INNER_PRODUCT_ULPS = 16
#: a derivative smaller than this fraction of its check's tolerance counts as zero: both
#: sides agree it vanishes to what the function's accuracy can show (a stationary point)
ZERO_FRACTION = 1e-3
#: what to do when a check cannot resolve the quantity it compares
RESCALE = (
    "pass accuracy= if the function is more accurate than assumed, or rescale x and the "
    "function so that both are of order 1 near x"
)


def inner_product_rtol(n: int, dtype: np.dtype) -> tuple[float, str]:
    """Relative rounding allowed when two inner products of operator outputs are compared.

    ``max(16 n eps, sqrt(eps))``: an operator rounds relative to its intermediates, which
    can be far larger than its result (``p v - p (p . v)`` with ``p ~ 1``), so the result's
    own size is not a safe scale; ``sqrt(eps)`` of it still catches any asymmetry, sign or
    transposition bug of relative size above 1.5e-8 (float64) or 3.5e-4 (float32).
    """
    e = fd.eps(dtype)
    r = max(INNER_PRODUCT_ULPS * n * e, math.sqrt(e))
    return r, (
        f"max(16 n eps, sqrt(eps)) = {r:.1e} for {dtype.name}, n = {n} "
        "(operators round relative to their intermediates)"
    )


def _accuracy(
    dtype: np.dtype, accuracy: float | None, what: str
) -> tuple[Callable[[float], float], str]:
    """The assumed absolute accuracy of a function's values, and how to describe it."""
    e = fd.eps(dtype)
    if accuracy is None:
        return (lambda scale: fd.ULPS * e * scale), (
            f"{what} assumed accurate to {fd.ULPS} eps({dtype.name}) = {fd.ULPS * e:.1e} "
            f"of its magnitude; pass accuracy= to change"
        )
    if not (accuracy >= 0 and math.isfinite(accuracy)):
        raise ValueError(f"accuracy must be finite and >= 0, got {accuracy!r}")
    return (lambda scale: float(accuracy)), f"{what} accurate to {accuracy:.1e} (given)"


def _scalar(report: CheckReport, name: str, value: Any) -> float:
    reject_complex(name, value, "returned")
    arr = np.asarray(value)
    if arr.size != 1:
        report.fail(f"{name} must return a scalar, got shape {arr.shape}")
    try:
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        report.fail(f"{name} must return a real number, got {value!r}")
        raise


def _where(i: int, seed: int) -> str:
    return f"direction #{i} (seed {seed})"


def check_grad(
    f: Callable[[np.ndarray], Any],
    grad: Callable[[np.ndarray], Any],
    x: Any,
    *,
    n_directions: int = 3,
    seed: int = 0,
    accuracy: float | None = None,
) -> CheckReport:
    r"""Check ``grad(x)`` against central differences of ``f`` along random directions.

    For each direction :math:`v`, :math:`\nabla f(x)^T v` is compared with the Richardson
    extrapolant of :math:`(f(x + hv) - f(x - hv)) / 2h` at ``h`` and ``h/2``; the tolerance
    is the pair's disagreement (the truncation estimate) plus a rounding bound
    ``accuracy / h``.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    grad : callable
        ``grad(x) -> array`` shaped like ``x``.
    x : array_like
        The point (float32 or float64; the functions receive this dtype).
    n_directions : int
        Random directions to test (4 calls of ``f`` each, more if ``h`` must shrink).
    seed : int
        Seed of the directions.
    accuracy : float, optional
        Absolute accuracy of ``f``'s values; by default 64 eps of the dtype times their
        magnitude.

    Returns
    -------
    CheckReport

    Raises
    ------
    AssertionError
        If a directional derivative disagrees beyond the tolerance.

    Examples
    --------
    >>> import numpy as np
    >>> from trustregion.testing import check_grad
    >>> f = lambda x: float(np.sum(np.sin(x)))
    >>> report = check_grad(f, np.cos, np.array([0.1, 2.0, -3.0]))
    >>> report.calls
    {'f': 12, 'grad': 1}
    >>> check_grad(f, lambda x: np.cos(x) * 1.001, np.array([0.1, 2.0, -3.0]))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: check_grad: grad(x) . v against central differences of f along direction #0 ...
      error found 7.089e-04 > tolerance 2.451e-09
      tolerance = Richardson truncation estimate |D(h) - D(h/2)| = 2.55e-11 (central ...
    """
    report = CheckReport("check_grad")
    x = vector_argument("x", x)
    n_directions = count_argument("n_directions", n_directions)
    f_c, grad_c = Counted("f", f), Counted("grad", grad)
    dtype = x.dtype
    e = fd.eps(dtype)
    g = as_float_array(report, "grad(x)", grad_c(x.copy()), x.shape)
    require_finite(report, "grad(x)", g)
    acc, note = _accuracy(dtype, accuracy, "f")
    rng = np.random.default_rng(seed)
    h0, h_min = fd.step(x, 1 / 3), fd.smallest_exact_step(x)
    for i in range(n_directions):
        v = fd.direction(rng, x.shape, dtype)
        analytic = float(g.ravel() @ v.astype(np.float64).ravel())

        def quotient(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            fp = _scalar(report, "f", f_c(fd.shifted(x, h, v)))
            fm = _scalar(report, "f", f_c(fd.shifted(x, -h, v)))
            return np.asarray((fp - fm) / (2 * h)), max(abs(fp), abs(fm))

        est = fd.richardson(
            quotient,
            h0,
            order=2,
            rounding=lambda h, s: acc(s) / h,
            accuracy_note=note,
            reference=analytic,
            min_h=h_min,
        )
        own = fd.ULPS * e * fd.magnitude(g) * fd.magnitude(v)
        what = (
            f"grad(x) . v against central differences of f along {_where(i, seed)}: "
            f"grad . v = {analytic:.10g}, difference quotient = {float(est.value):.10g}"
        )
        source = est.describe() + f" + {fd.ULPS} eps |grad| |v| = {own:.1e}"
        source += _step_note(x, est.h)
        report.compare(what, abs(analytic - float(est.value)), est.tolerance + own, source)
        size = max(abs(analytic), abs(float(est.value)), fd.magnitude(g) * fd.magnitude(v))
        _require_resolved(report, what, est.tolerance + own, size, source, x=x, h=est.h)
    return report.count(f_c, grad_c)


def _require_resolved(report: CheckReport, what: str, tolerance: float, magnitude: float,
                      source: str, *, x: np.ndarray | None, h: float) -> None:
    """Fail a comparison that passed only because its tolerance swamps what it compares,
    where the step dwarfs the point (``x`` of order 1e-8: the default step
    ``~ eps^(1/3) max(1, |x|)`` never drops to the scale a function of such an ``x`` varies
    on, and a result off by a factor 2 or of the wrong sign passed).

    ``magnitude`` is the size of the compared quantity (both sides, and norms that do not
    cancel); below ``ZERO_FRACTION`` of the tolerance it counts as zero and the pass stands.
    Otherwise the tolerance must be below half of it (see :meth:`CheckReport.resolve`).
    At ordinary scales an unresolved comparison passes as before: random inputs meet small
    directional derivatives that float32 cannot resolve, and failing correct code there would
    make every property test of a float32 function flaky.
    """
    if _step_dwarfs(x, h) and magnitude > ZERO_FRACTION * tolerance:
        report.resolve(what, tolerance, magnitude, source, RESCALE)


def _step_dwarfs(x: np.ndarray | None, h: float) -> bool:
    """Whether the step is over 1024 times a nonzero point's largest entry."""
    top = 0.0 if x is None else float(np.max(np.abs(x)))
    return 0.0 < top and h > 1024 * top


def _step_note(x: np.ndarray | None, h: float) -> str:
    """A hint for the message when the step dwarfs the point (the step never drops below
    ``eps^(1/3)``, so a function varying on the scale of a tiny ``x`` is not resolved)."""
    if x is None or not _step_dwarfs(x, h):
        return ""
    top = float(np.max(np.abs(x)))
    return (
        f"; note h = {h:.3g} is over 1024 |x|_inf = {top:.3g}: if the function varies on "
        "the scale of x, rescale x to order 1"
    )


def _vector_quotient(
    report: CheckReport,
    name: str,
    function: Counted,
    x: np.ndarray,
    v: np.ndarray,
    shape: tuple[int, ...] | None,
    first: Any = None,
) -> Callable[[float], tuple[np.ndarray, float]]:
    """``(F(x + hv) - F(x - hv)) / 2h`` for an array-valued ``F``."""

    def quotient(h: float) -> tuple[np.ndarray, float]:
        plus = as_float_array(report, name, function(fd.shifted(x, h, v)), shape)
        minus = as_float_array(report, name, function(fd.shifted(x, -h, v)), shape)
        return (plus - minus) / (2 * h), max(fd.magnitude(plus), fd.magnitude(minus))

    return quotient


def _check_against_central_differences(
    report: CheckReport,
    quotient: Callable[[float], tuple[np.ndarray, float]],
    product: np.ndarray,
    h0: float,
    h_min: float,
    acc: Callable[[float], float],
    note: str,
    e: float,
    label: str,
    symbol: str,
    x: np.ndarray | None = None,
) -> Any:
    """Compare an array-valued ``product`` with the Richardson extrapolant of ``quotient``.

    The tolerance is the estimate's own plus ``ULPS`` eps of ``|product|`` (named
    ``symbol`` in the message), and must resolve the product (see :func:`_require_resolved`);
    returns the estimate for callers that reuse it.
    """
    est = fd.richardson(
        quotient,
        h0,
        order=2,
        rounding=lambda h, s: acc(s) / h,
        accuracy_note=note,
        reference=fd.magnitude(product),
        min_h=h_min,
    )
    own = fd.ULPS * e * fd.magnitude(product)
    source = est.describe() + f" + {fd.ULPS} eps {symbol} = {own:.1e}" + _step_note(x, est.h)
    report.compare(label, fd.magnitude(product - est.value), est.tolerance + own, source)
    size = max(fd.magnitude(product), fd.magnitude(est.value))
    _require_resolved(report, label, est.tolerance + own, size, source, x=x, h=est.h)
    return est


def check_jvp_vjp(
    f: Callable[[np.ndarray], Any],
    jvp: Callable[[np.ndarray, np.ndarray], Any],
    vjp: Callable[[np.ndarray, np.ndarray], Any],
    x: Any,
    *,
    n_directions: int = 2,
    seed: int = 0,
    accuracy: float | None = None,
) -> CheckReport:
    r"""Check a Jacobian-vector product and its transpose against each other and ``f``.

    For random :math:`t` (shaped like ``x``) and :math:`c` (shaped like ``f(x)``):

    - the dot test :math:`\langle c, J t\rangle = \langle J^T c, t\rangle` to
      :math:`r\,(\|c\|\|Jt\| + \|J^Tc\|\|t\|)` with :math:`r = \max(16 (n + m)\epsilon,
      \sqrt\epsilon)` (see :func:`inner_product_rtol`);
    - :math:`J t` against central differences of ``f`` along :math:`t` (Richardson pair);
    - :math:`\langle J^T c, t\rangle` against the same differences projected on :math:`c`.

    Parameters
    ----------
    f : callable
        ``f(x) -> array`` (any shape).
    jvp : callable
        ``jvp(x, t) -> J t``, shaped like ``f(x)``.
    vjp : callable
        ``vjp(x, c) -> J^T c``, shaped like ``x``.
    x : array_like
    n_directions : int
        Pairs ``(t, c)`` to test.
    seed : int
    accuracy : float, optional
        Absolute accuracy of ``f``'s entries (default 64 eps of their magnitude).

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_jvp_vjp")
    x = vector_argument("x", x)
    n_directions = count_argument("n_directions", n_directions)
    f_c, jvp_c, vjp_c = Counted("f", f), Counted("jvp", jvp), Counted("vjp", vjp)
    y_raw = np.asarray(f_c(x.copy()))
    y = as_float_array(report, "f(x)", y_raw)
    # the rounding allowed is that of the less precise of the input and output dtypes
    dtype = fd.float_dtype(x, y_raw) if y_raw.dtype.kind == "f" else x.dtype
    e = fd.eps(dtype)
    n, m = x.size, y.size
    acc, note = _accuracy(dtype, accuracy, "f")
    rng = np.random.default_rng(seed)
    h0, h_min = fd.step(x, 1 / 3, dtype), fd.smallest_exact_step(x)
    for i in range(n_directions):
        t = fd.direction(rng, x.shape, x.dtype)
        c = rng.standard_normal(y.shape).astype(x.dtype).astype(np.float64)
        jt = as_float_array(report, "jvp(x, t)", jvp_c(x.copy(), t.copy()), y.shape)
        jtc = as_float_array(report, "vjp(x, c)", vjp_c(x.copy(), c.astype(x.dtype)), x.shape)
        require_finite(report, "jvp(x, t)", jt)
        require_finite(report, "vjp(x, c)", jtc)
        left, right = float(c.ravel() @ jt.ravel()), float(jtc.ravel() @ t.ravel())
        scale = fd.magnitude(c) * fd.magnitude(jt) + fd.magnitude(jtc) * fd.magnitude(t)
        report.compare(
            f"dot test <c, J t> = <J^T c, t> along {_where(i, seed)}: "
            f"<c, jvp(x, t)> = {left:.10g}, <vjp(x, c), t> = {right:.10g}",
            abs(left - right),
            inner_product_rtol(n + m, dtype)[0] * scale,
            inner_product_rtol(n + m, dtype)[1] + " x (|c||Jt| + |J^T c||t|)",
        )
        est = _check_against_central_differences(
            report,
            _vector_quotient(report, "f", f_c, x, t, y.shape),
            jt,
            h0,
            h_min,
            acc,
            note,
            e,
            f"jvp(x, t) against central differences of f along {_where(i, seed)}",
            "|Jt|",
            x=x,
        )
        projected = float(c.ravel() @ np.ravel(est.value))
        own = fd.ULPS * e * fd.magnitude(jtc) * fd.magnitude(t)
        report.compare(
            f"<vjp(x, c), t> against <c, central differences of f> along {_where(i, seed)}: "
            f"{right:.10g} vs {projected:.10g}",
            abs(right - projected),
            fd.magnitude(c) * est.tolerance + own,
            "|c| x (" + est.describe() + f") + {fd.ULPS} eps |J^T c||t| = {own:.1e}",
        )
    return report.count(f_c, jvp_c, vjp_c)


def check_hvp(
    grad: Callable[[np.ndarray], Any],
    hvp: Callable[[np.ndarray, np.ndarray], Any],
    x: Any,
    *,
    n_directions: int = 2,
    seed: int = 0,
    accuracy: float | None = None,
) -> CheckReport:
    r"""Check a Hessian-vector product: against the gradient, symmetric, linear.

    - :math:`H v` against the Richardson extrapolant of
      :math:`(\nabla f(x + hv) - \nabla f(x - hv)) / 2h`;
    - symmetry :math:`\langle u, H v\rangle = \langle H u, v\rangle` to
      :math:`r\,(\|u\|\|Hv\| + \|Hu\|\|v\|)`, :math:`r = \max(16 n \epsilon, \sqrt\epsilon)`;
    - linearity :math:`H(\tfrac12 u - 2 v) = \tfrac12 H u - 2 H v` to the same rounding.

    Parameters
    ----------
    grad : callable
        ``grad(x) -> array`` shaped like ``x``.
    hvp : callable
        ``hvp(x, v) -> H(x) v`` shaped like ``x``.
    x : array_like
    n_directions : int
        Directions to test (at least 2 are used for the symmetry test).
    seed : int
    accuracy : float, optional
        Absolute accuracy of the gradient's entries (default 64 eps of their magnitude).

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import numpy as np
    >>> from trustregion.testing import check_hvp
    >>> A = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> grad = lambda x: A @ x + np.sin(x)
    >>> hvp = lambda x, v: A @ v + np.cos(x) * v
    >>> check_hvp(grad, hvp, np.array([0.5, -1.0])).calls
    {'grad': 8, 'hvp': 3}
    """
    report = CheckReport("check_hvp")
    x = vector_argument("x", x)
    n_directions = max(2, count_argument("n_directions", n_directions))
    grad_c, hvp_c = Counted("grad", grad), Counted("hvp", hvp)
    dtype = x.dtype
    e = fd.eps(dtype)
    n = x.size
    acc, note = _accuracy(dtype, accuracy, "grad")
    rng = np.random.default_rng(seed)
    h0, h_min = fd.step(x, 1 / 3), fd.smallest_exact_step(x)
    directions = [fd.direction(rng, x.shape, dtype) for _ in range(n_directions)]
    products = []
    for i, v in enumerate(directions):
        hv = as_float_array(report, "hvp(x, v)", hvp_c(x.copy(), v.copy()), x.shape)
        require_finite(report, f"hvp(x, v) along {_where(i, seed)}", hv)
        products.append(hv)
    rounding, source = inner_product_rtol(n, dtype)
    for i in range(n_directions - 1):
        u, v, hu, hv = directions[i], directions[i + 1], products[i], products[i + 1]
        u_hv, hu_v = float(u.ravel() @ hv.ravel()), float(hu.ravel() @ v.ravel())
        scale = fd.magnitude(u) * fd.magnitude(hv) + fd.magnitude(hu) * fd.magnitude(v)
        report.compare(
            f"symmetry <u, H v> = <H u, v> for directions #{i}, #{i + 1} (seed {seed}): "
            f"{u_hv:.10g} vs {hu_v:.10g}",
            abs(u_hv - hu_v),
            rounding * scale,
            source + " x (|u||Hv| + |Hu||v|)",
        )
    u, v, hu, hv = directions[0], directions[1], products[0], products[1]
    combined = (0.5 * u.astype(np.float64) - 2.0 * v.astype(np.float64)).astype(dtype)
    h_comb = as_float_array(report, "hvp(x, v)", hvp_c(x.copy(), combined), x.shape)
    expected = 0.5 * hu - 2.0 * hv
    report.compare(
        f"linearity H(u/2 - 2v) = H u / 2 - 2 H v for directions #0, #1 (seed {seed})",
        fd.magnitude(h_comb - expected),
        rounding * (0.5 * fd.magnitude(hu) + 2.0 * fd.magnitude(hv) + fd.magnitude(h_comb)),
        source + " x (|Hu|/2 + 2|Hv| + |H(u/2 - 2v)|)",
    )
    for i, (v, hv) in enumerate(zip(directions, products, strict=True)):
        _check_against_central_differences(
            report,
            _vector_quotient(report, "grad", grad_c, x, v, x.shape),
            hv,
            h0,
            h_min,
            acc,
            note,
            e,
            f"hvp(x, v) against central differences of grad along {_where(i, seed)}",
            "|Hv|",
            x=x,
        )
    return report.count(grad_c, hvp_c)


def check_fvp(
    fvp: Callable[..., Any],
    kl: Callable[[np.ndarray, np.ndarray], Any],
    params: Any,
    *,
    kl_grad: Callable[[np.ndarray, np.ndarray], Any] | None = None,
    damping: float | None = None,
    n_directions: int = 2,
    seed: int = 0,
    kl_accuracy: float | None = None,
) -> CheckReport:
    r"""Check a Fisher-vector product against the KL divergence it comes from.

    With :math:`K(\theta') = \mathrm{KL}(\theta \,\|\, \theta')` and ``params`` :math:`=\theta`,
    the Fisher matrix is the Hessian :math:`F = \nabla^2 K(\theta)`, so for random
    directions :math:`u, v`:

    - :math:`K(\theta) = 0` and :math:`\nabla K(\theta)^T v = 0` (central differences);
    - :math:`v^T F v` against :math:`(K(\theta + hv) + K(\theta - hv) - 2K(\theta)) / h^2`
      (the second-order term :math:`\tfrac12 v^T F v` of the KL, both signs);
    - :math:`u^T F v` against the mixed second difference of :math:`K` (or, given
      ``kl_grad``, :math:`F v` against central differences of the KL gradient);
    - symmetry :math:`u^T F v = v^T F u` and :math:`v^T F v \ge -r |v||Fv|`, with
      :math:`r = \max(16 n \epsilon, \sqrt\epsilon)`;
    - with ``damping``: ``fvp(theta, v, damping=lam) - fvp(theta, v)`` is exactly
      :math:`\lambda v` to rounding.

    Each difference is a Richardson pair (steps ``h`` and ``h/2``).

    Parameters
    ----------
    fvp : callable
        ``fvp(theta, v) -> F(theta) v`` (and ``fvp(theta, v, damping=lam)`` if ``damping``
        is given).
    kl : callable
        ``kl(theta_old, theta) -> float``: the (mean) KL from the distribution(s) at
        ``theta_old`` to those at ``theta``.
    params : array_like, 1-D
        :math:`\theta`.
    kl_grad : callable, optional
        ``kl_grad(theta_old, theta) -> gradient of kl in theta``; enables the sharp
        vector check of :math:`F v`.
    damping : float, optional
        :math:`\lambda > 0` to test the damping keyword with.
    n_directions : int
    seed : int
    kl_accuracy : float, optional
        Absolute accuracy of ``kl``'s values; by default 64 eps of the dtype times
        ``max(1, |theta|_inf, |kl|)`` (KL values near 0 carry the rounding of the
        log-probabilities).

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_fvp")
    theta = vector_argument("params", params)
    if theta.ndim != 1:
        raise ValueError(f"params must be 1-D, got shape {theta.shape}")
    n_directions = max(2, count_argument("n_directions", n_directions))
    if damping is not None and not (float(damping) > 0 and math.isfinite(float(damping))):
        raise ValueError(f"damping must be finite and > 0, got {damping!r}")
    fvp_c, kl_c = Counted("fvp", fvp), Counted("kl", kl)
    kl_grad_c = None if kl_grad is None else Counted("kl_grad", kl_grad)
    dtype = theta.dtype
    e = fd.eps(dtype)
    n = theta.size
    largest = float(np.max(np.abs(theta)))
    if kl_accuracy is None:
        # KL values near 0 still carry the rounding of log-densities that grow with theta
        def acc(scale: float) -> float:
            return fd.ULPS * e * max(1.0, largest, scale)

        note = (
            f"kl assumed accurate to {fd.ULPS} eps({dtype.name}) x max(1, |theta|_inf, |kl|) "
            f"= {fd.ULPS * e:.1e} x max(1, {largest:.3g}, |kl|); pass kl_accuracy= to change"
        )
    else:
        if not (kl_accuracy >= 0 and math.isfinite(kl_accuracy)):
            raise ValueError(f"kl_accuracy must be finite and >= 0, got {kl_accuracy!r}")

        def acc(scale: float) -> float:
            return float(kl_accuracy)

        note = f"kl accurate to {kl_accuracy:.1e} (given)"
    rng = np.random.default_rng(seed)

    memo: dict[tuple[float, ...], float] = {}

    def K(shift: np.ndarray | None, h: float = 0.0) -> float:
        key = (h, *(() if shift is None else shift.tolist()))
        if key not in memo:
            point = theta.copy() if shift is None else fd.shifted(theta, h, shift)
            memo[key] = _scalar(report, "kl", kl_c(theta.copy(), point))
        return memo[key]

    k0 = K(None)
    report.compare(
        f"KL(theta || theta) = {k0:.3e} must be 0",
        abs(k0),
        acc(abs(k0)),
        note,
    )
    directions = [fd.direction(rng, theta.shape, dtype) for _ in range(n_directions)]
    products = []
    for i, v in enumerate(directions):
        fv = as_float_array(report, "fvp(theta, v)", fvp_c(theta.copy(), v.copy()), theta.shape)
        require_finite(report, f"fvp(theta, v) along {_where(i, seed)}", fv)
        products.append(fv)
    rounding, source = inner_product_rtol(n, dtype)
    for i, (v, fv) in enumerate(zip(directions, products, strict=True)):
        vfv = float(v.ravel() @ fv.ravel())
        report.compare(
            f"positive semi-definiteness v^T F v = {vfv:.6g} >= 0 along {_where(i, seed)}",
            max(0.0, -vfv),
            rounding * fd.magnitude(v) * fd.magnitude(fv),
            source + " x |v||Fv|",
        )
    u, v, fu, fv = directions[0], directions[1], products[0], products[1]
    u_fv, fu_v = float(u.ravel() @ fv.ravel()), float(fu.ravel() @ v.ravel())
    report.compare(
        f"symmetry u^T F v = v^T F u for directions #0, #1 (seed {seed}): "
        f"{u_fv:.10g} vs {fu_v:.10g}",
        abs(u_fv - fu_v),
        rounding * (fd.magnitude(u) * fd.magnitude(fv) + fd.magnitude(fu) * fd.magnitude(v)),
        source + " x (|u||Fv| + |Fu||v|)",
    )
    if damping is not None:
        lam = float(damping)
        damped = as_float_array(
            report,
            "fvp(theta, v, damping=...)",
            fvp_c(theta.copy(), u.copy(), damping=lam),
            theta.shape,
        )
        added = damped - fu
        report.compare(
            f"damping: fvp(theta, v, damping={lam:g}) - fvp(theta, v) must be {lam:g} v "
            f"along {_where(0, seed)}",
            fd.magnitude(added - lam * u.astype(np.float64)),
            4 * e * (fd.magnitude(fu) + fd.magnitude(damped)),
            f"4 eps({dtype.name}) x (|Fv| + |(F + lam I) v|)",
        )

    # second differences: h ~ eps^(1/5) balances the O(h^2) truncation of the pair against
    # the accuracy / h^2 rounding
    h0 = fd.step(theta, 1 / 5)
    h_min = fd.smallest_exact_step(theta)
    for i, (v, fv) in enumerate(zip(directions, products, strict=True)):
        vfv = float(v.ravel() @ fv.ravel())

        def curvature(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            kp, km = K(v, h), K(v, -h)
            return np.asarray((kp + km - 2 * k0) / (h * h)), max(abs(kp), abs(km), abs(k0))

        est = fd.richardson(
            curvature,
            h0,
            order=2,
            rounding=lambda h, s: 4 * acc(s) / (h * h),
            accuracy_note=note,
            reference=abs(vfv),
            min_h=h_min,
        )
        own = fd.ULPS * e * fd.magnitude(v) * fd.magnitude(fv)
        what = (
            f"v^T F v = {vfv:.10g} against (KL(theta||theta+hv) + KL(theta||theta-hv)) / h^2 "
            f"= {float(est.value):.10g} (twice the KL's second-order term) along {_where(i, seed)}"
        )
        source = est.describe() + f" + {fd.ULPS} eps |v||Fv| = {own:.1e}"
        report.compare(what, abs(vfv - float(est.value)), est.tolerance + own, source)

        def slope(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            kp, km = K(v, h), K(v, -h)
            return np.asarray((kp - km) / (2 * h)), max(abs(kp), abs(km))

        grad_est = fd.richardson(
            slope, est.h, order=2, rounding=lambda h, s: acc(s) / h, accuracy_note=note, retries=0
        )
        report.compare(
            f"zero gradient of KL(theta || .) at theta: central difference along "
            f"{_where(i, seed)} = {float(grad_est.value):.3e}",
            abs(float(grad_est.value)),
            grad_est.tolerance,
            grad_est.describe(),
        )

    if kl_grad_c is not None:
        for i, (v, fv) in enumerate(zip(directions, products, strict=True)):

            def gradient_quotient(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
                plus = as_float_array(
                    report, "kl_grad", kl_grad_c(theta.copy(), fd.shifted(theta, h, v)), theta.shape
                )
                minus = as_float_array(
                    report,
                    "kl_grad",
                    kl_grad_c(theta.copy(), fd.shifted(theta, -h, v)),
                    theta.shape,
                )
                return (plus - minus) / (2 * h), max(fd.magnitude(plus), fd.magnitude(minus))

            _check_against_central_differences(
                report,
                gradient_quotient,
                fv,
                fd.step(theta, 1 / 3),
                h_min,
                acc,
                note.replace("kl ", "kl_grad ", 1),
                e,
                "fvp(theta, v) against central differences of kl_grad(theta, .) along "
                + _where(i, seed),
                "|Fv|",
            )
        report.count(kl_grad_c)
    else:
        u, v, fv = directions[0], directions[1], products[1]  # the pair of the symmetry test
        both = (u.astype(np.float64) + v.astype(np.float64)).astype(dtype)
        apart = (u.astype(np.float64) - v.astype(np.float64)).astype(dtype)

        def mixed(h: float) -> tuple[np.ndarray, float]:
            values = [K(both, h), K(apart, h), K(apart, -h), K(both, -h)]
            return (
                np.asarray((values[0] - values[1] - values[2] + values[3]) / (4 * h * h)),
                max(abs(k) for k in values),
            )

        est = fd.richardson(
            mixed,
            h0,
            order=2,
            rounding=lambda h, s: acc(s) / (h * h),
            accuracy_note=note,
            reference=abs(u_fv),
            min_h=h_min,
        )
        own = fd.ULPS * e * fd.magnitude(u) * fd.magnitude(fv)
        what = (
            f"u^T F v = {u_fv:.10g} against the mixed second difference of KL(theta || .) "
            f"= {float(est.value):.10g} for directions #0, #1 (seed {seed})"
        )
        source = est.describe() + f" + {fd.ULPS} eps |u||Fv| = {own:.1e}"
        report.compare(what, abs(u_fv - float(est.value)), est.tolerance + own, source)
    return report.count(fvp_c, kl_c)
