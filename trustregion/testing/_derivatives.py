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
    number_argument,
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
    "pass accuracy= if the function is more accurate than assumed, or x_scale= the length "
    "on which the function varies near x (the steps are about eps^(1/3) x_scale), or rescale "
    "x and the function so that both are of order 1 near x"
)
#: the same for check_fvp, whose KL is differenced twice
KL_REMEDY = (
    "pass kl_accuracy= if the KL is more accurate than assumed, or x_scale= the length on "
    "which it varies near params (its second differences step about eps^(1/5) x_scale), "
    "or rescale params so that the KL varies on a scale of order 1"
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


def _input_rounding(
    acc: Callable[[float], float],
    note: str,
    accuracy: float | None,
    x: np.ndarray,
    sensitivity: Callable[[], float],
    what: str,
) -> tuple[Callable[[float], float], str]:
    """The accuracy ``acc`` plus the rounding of ``x``'s own entries, where ``|x|_inf`` is
    over ``SCALE_RATIO`` and no ``accuracy`` was given.

    A function computed from ``x`` rounds its first operations relative to ``x``'s entries
    (``x / 100`` at ``x ~ 1e6`` is off by ``eps 1e4``), which changes its value by about
    ``eps sum_i |df/dx_i| |x_i|`` (``sensitivity()``): beyond 64 eps of the value itself
    where ``|x|`` is huge and the function varies on a far smaller scale, which is where a
    step for the scale 1 is tried and divides that rounding by a small ``h``. Ordinary
    scales keep the plain assumption.
    """
    if accuracy is not None or float(np.max(np.abs(x))) <= fd.SCALE_RATIO:
        return acc, note
    with np.errstate(over="ignore"):
        extra = fd.ULPS * fd.eps(x.dtype) * sensitivity()
    return (lambda scale: acc(scale) + extra), (
        f"{note}; plus x's own rounding, {fd.ULPS} eps({x.dtype.name}) x {what} = {extra:.1e}"
    )


def _x_scale(value: Any) -> float | None:
    """The ``x_scale`` argument: None, or a finite length > 0."""
    if value is None:
        return None
    try:
        scale = number_argument("x_scale", value)
    except ValueError:
        scale = math.nan
    if not scale > 0:
        raise ValueError(f"x_scale must be finite and > 0, got {value!r}")
    return scale


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
    x_scale: float | None = None,
) -> CheckReport:
    r"""Check ``grad(x)`` against central differences of ``f`` along random directions.

    For each direction :math:`v`, :math:`\nabla f(x)^T v` is compared with the Richardson
    extrapolant of :math:`(f(x + hv) - f(x - hv)) / 2h` at ``h`` and ``h/2``; the tolerance
    is the pair's disagreement (the truncation estimate) plus a rounding bound
    ``accuracy / h``.

    The step starts at :math:`h \approx \epsilon^{1/3} s` for the length :math:`s` on
    which ``f`` varies near ``x``: ``x_scale`` if given, else :math:`\max(1, \|x\|_\infty)`,
    and where :math:`\|x\|_\infty` is nonzero and far from 1 (below :math:`2^{-10}` or 4
    default steps, above :math:`2^{10}`) also :math:`\min(1, \|x\|_\infty)`: a function of a
    tiny ``x`` may vary on the scale of ``x`` or on the scale 1. The estimate compared with is
    the smaller step's where the two disagree, where the default's pair is unsettled or where
    the smaller step's does not confirm it, else the tighter
    (:func:`~trustregion.testing._differences.richardson_at_steps`). Where the default step is
    over 1024 times :math:`\|x\|_\infty`, or the two estimates disagreed, the comparison
    must resolve :math:`\nabla f(x)^T v` (a tolerance below half of it) or the check fails
    with "cannot resolve"; so it does where the tolerance is not finite.

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
    x_scale : float, optional
        The length on which ``f`` varies near ``x`` (like ``x_scale`` of
        ``scipy.optimize.least_squares``): the only scale the step is taken from. Needed
        where neither 1 nor :math:`\|x\|_\infty` is that length (``f(x) = sin(x / 1e-8)``
        at ``x = 0``, say). Given, each direction takes one Richardson estimate (4 calls,
        more if ``h`` must shrink), as the default does at ordinary scales; far from them
        the default takes two.

    Returns
    -------
    CheckReport

    Raises
    ------
    AssertionError
        If a directional derivative disagrees beyond the tolerance, or where it cannot be
        resolved (see above).

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
    length = _x_scale(x_scale)
    f_c, grad_c = Counted("f", f), Counted("grad", grad)
    dtype = x.dtype
    e = fd.eps(dtype)
    g = as_float_array(report, "grad(x)", grad_c(x.copy()), x.shape)
    require_finite(report, "grad(x)", g)
    acc, note = _accuracy(dtype, accuracy, "f")
    acc, note = _input_rounding(
        acc,
        note,
        accuracy,
        x,
        lambda: float(np.abs(g.ravel()) @ np.abs(x.astype(np.float64).ravel())),
        "sum |grad_i x_i|",
    )
    rng = np.random.default_rng(seed)
    steps, h_min = fd.start_steps(x, 1 / 3, x_scale=length), fd.smallest_exact_step(x)
    dwarfed = _step_dwarfs(x, fd.step(x, 1 / 3))  # the point's regime, whatever x_scale says
    for i in range(n_directions):
        v = fd.direction(rng, x.shape, dtype)
        analytic = float(g.ravel() @ v.astype(np.float64).ravel())

        def quotient(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            fp = _scalar(report, "f", f_c(fd.shifted(x, h, v)))
            fm = _scalar(report, "f", f_c(fd.shifted(x, -h, v)))
            return np.asarray((fp - fm) / (2 * h)), max(abs(fp), abs(fm))

        choice = fd.richardson_at_steps(
            quotient,
            steps,
            prefer_smaller=dwarfed,
            order=2,
            rounding=lambda h, s: acc(s) / h,
            accuracy_note=note,
            reference=analytic,
            min_h=h_min,
        )
        est = choice.estimate
        own = fd.ULPS * e * fd.magnitude(g) * fd.magnitude(v)
        what = (
            f"grad(x) . v against central differences of f along {_where(i, seed)}: "
            f"grad . v = {analytic:.10g}, difference quotient = {float(est.value):.10g}"
        )
        source = est.describe() + f" + {fd.ULPS} eps |grad| |v| = {own:.1e}"
        source += _notes(choice, x, h_min)
        _judge(
            report,
            what,
            abs(analytic - float(est.value)),
            est.tolerance + own,
            _size(analytic, float(est.value), fd.magnitude(g) * fd.magnitude(v)),
            source,
            choice=choice,
            x=x,
            h_min=h_min,
            required=dwarfed or choice.disagreed,
        )
    return report.count(f_c, grad_c)


def _size(analytic: float, estimate: float, norms: float) -> float:
    """The size of a compared inner product for :func:`_require_resolved`: the estimate's,
    or the norms of its factors (a direction meeting the gradient at a right angle has a
    small product, which need not be resolved for the check to see a wrong gradient along
    the others).

    The norms are the user's and shrink with the estimate where it is smaller than the
    analytic value, down to half of them: a gradient doubled by a bug would otherwise
    double the size it is judged against and be "resolved" by the tolerance that passes it.
    """
    ratio = 1.0 if analytic == 0 else abs(estimate) / abs(analytic)
    if not math.isfinite(ratio):
        ratio = 1.0
    return max(abs(estimate), norms * min(1.0, max(0.5, ratio)))


def _judge(
    report: CheckReport,
    what: str,
    error: float,
    tolerance: float,
    magnitude: float,
    source: str,
    *,
    choice: fd.Choice,
    x: np.ndarray,
    h_min: float,
    required: bool,
    remedy: str = RESCALE,
) -> None:
    """Compare, where the estimate can be trusted, and require it to resolve the quantity
    where that is ``required`` (see :func:`_require_resolved`). A tolerance that is not
    finite (values that overflowed at every step tried) cannot resolve anything.

    Where the steps for both scales were tried (:func:`fd.richardson_at_steps`), the
    smaller one ended at the smallest step that perturbs ``x`` exactly, and neither it nor
    the estimate kept is in its asymptotic range (:attr:`fd.Estimate.settled`), the
    function varies on a scale that ``x``'s spacing does not let a difference reach
    (``sin(x)`` at ``x ~ 1e4`` in float32, whose smallest exact step is 8): no tolerance
    computed there can be trusted either way.
    """
    if not math.isfinite(tolerance):  # values that overflowed at every step tried
        report.resolve(what, tolerance, magnitude, source, remedy)
    smallest = choice.last
    if (
        choice.tried
        and smallest.h <= h_min
        and not smallest.settled
        and not choice.estimate.settled
    ):
        report.fail(
            f"cannot resolve {what}\n"
            f"  the estimates started at the steps for the scales max(1, |x|_inf) and "
            f"min(1, |x|_inf) are not settled (their pairs D(h), D(h/2) disagree), and the "
            f"smaller step is already the smallest that "
            f"perturbs x exactly in {x.dtype.name} (h = {h_min:.3g}, as x's spacing is "
            f"{float(np.spacing(np.max(np.abs(x)))):.3g}): the function varies on a scale "
            "below what a difference at this x can resolve; check it in float64 or at a "
            "point of smaller magnitude\n"
            f"  tolerance = {source}"
        )
    report.compare(what, error, tolerance, source)
    _require_resolved(report, what, tolerance, magnitude, source, required=required,
                      remedy=remedy)


def _require_resolved(report: CheckReport, what: str, tolerance: float, magnitude: float,
                      source: str, *, required: bool, remedy: str = RESCALE) -> None:
    """Fail a comparison that passed only because its tolerance swamps what it compares,
    where resolving it is ``required``: where the default step (whatever ``x_scale`` says)
    dwarfs the point (``x`` of order 1e-8 and a function varying on the scale 1, whose step
    ``~ eps^(1/3)`` stays far above ``x``), or where the estimates started at the steps for
    the scales 1 and ``|x|_inf`` disagreed (the function varies on a scale the larger step
    missed, and a result off by a factor 2 or of the wrong sign would pass the smaller
    step's loose tolerance). A tolerance that is not finite (values that overflowed) fails
    everywhere.

    ``magnitude`` is the size of the compared quantity (see :func:`_size`; for arrays, the
    larger norm of the two sides); below ``ZERO_FRACTION`` of the tolerance it counts as
    zero and the pass stands.
    Otherwise the tolerance must be below half of it (see :meth:`CheckReport.resolve`).
    At ordinary scales an unresolved comparison passes as before: random inputs meet small
    directional derivatives that float32 cannot resolve, and failing correct code there would
    make every property test of a float32 function flaky.
    """
    if not math.isfinite(tolerance) or (required and magnitude > ZERO_FRACTION * tolerance):
        report.resolve(what, tolerance, magnitude, source, remedy)


def _judge_second_difference(
    report: CheckReport, choice: fd.Choice, analytic: float, left: str, what: str,
    norms: float, eps: float, theta: np.ndarray, h_min: float,
) -> None:
    """:func:`_judge` ``analytic`` (``left^T F v``) against a KL second difference's
    estimate, whose value fills ``{estimate}`` in ``what``; ``norms`` is ``|left||Fv|``,
    which sets the rounding allowed for the product itself (``ULPS eps |left||Fv|``)."""
    est = choice.estimate
    value = float(est.value)
    own = fd.ULPS * eps * norms
    source = (est.describe() + f" + {fd.ULPS} eps |{left}||Fv| = {own:.1e}"
              + _notes(choice, theta, h_min))
    _judge(
        report,
        what.format(estimate=value),
        abs(analytic - value),
        est.tolerance + own,
        _size(analytic, value, norms),
        source,
        choice=choice,
        x=theta,
        h_min=h_min,
        required=choice.disagreed,
        remedy=KL_REMEDY,
    )


def _notes(choice: fd.Choice, x: np.ndarray, h_min: float) -> str:
    """What the message adds to a tolerance's source about the step: where it dwarfs ``x``,
    how it was chosen between two scales, and whether it is settled (``h_min``: the
    smallest step that perturbs ``x`` exactly)."""
    notes = _step_note(x, choice.estimate.h) + _choice_note(choice, x)
    if not choice.estimate.settled and choice.estimate.h > h_min:
        notes += (
            "; note the pair D(h), D(h/2) disagrees by over 1% of the estimate and its "
            "rounding bound (h is outside the asymptotic range): if the function varies on "
            "a scale far below h, pass x_scale="
        )
    if choice.tried and choice.last.h <= h_min:
        notes += (
            f"; note the estimate for the scale min(1, |x|_inf) is at the smallest step that "
            f"perturbs x exactly in {x.dtype.name}, h = {h_min:.3g}: if the function varies "
            f"on a scale near 1, x's spacing ({float(np.spacing(np.max(np.abs(x)))):.3g}) is "
            "too coarse to difference it (check it in float64 or at a point nearer 0)"
        )
    return notes


def _choice_note(choice: fd.Choice, x: np.ndarray) -> str:
    """What the message says of a step chosen between the scales 1 and ``|x|_inf``."""
    if not choice.tried:
        return ""
    top = float(np.max(np.abs(x)))
    other = f"the step for the scale min(1, |x|_inf) = {min(1.0, top):.3g}"
    if choice.disagreed:
        with np.errstate(over="ignore", invalid="ignore"):
            gap = fd.magnitude(np.asarray(choice.first.value, dtype=np.float64)
                               - choice.estimate.value)
        return (
            f"; the estimate started at the default step h = {choice.first.h:.3g} (scale "
            f"max(1, |x|_inf)) differs from this one, started at {other}, by {gap:.3e}, "
            f"beyond both tolerances ({choice.first.tolerance:.2e} and "
            f"{choice.estimate.tolerance:.2e}): the function varies on a scale the default "
            "step missed, and the smaller step's estimate is used"
        )
    if choice.estimate is choice.first:
        return f"; the estimate started at {other} agreed and confirmed this one, less tightly"
    why = {
        "unsettled": "agreed within the tolerances, but its pair D(h), D(h/2) is unsettled",
        "unconfirmed": "agreed only within this one's rounding bound, which a function "
        "rounding to a few ulps stays far inside (the default step's pair can be fooled by "
        "a function varying on the scale of x)",
        "resolves": "agreed within the tolerances, and this one resolves it alone (where the "
        "default step dwarfs x, its pair can be fooled by a function of x's own scale)",
        "tighter": "agreed, less tightly",
    }[choice.reason]
    return (
        f"; started at {other}: the estimate at the default step h = {choice.first.h:.3g}, "
        f"of size {fd.magnitude(choice.first.value):.6g} +- {choice.first.tolerance:.2e}, {why}"
    )


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
        "the scale of x, pass x_scale= or rescale x to order 1"
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
        size = max(fd.magnitude(plus), fd.magnitude(minus))
        if size < 1e300 * min(h, 1.0):  # cannot overflow
            return (plus - minus) / (2 * h), size
        with np.errstate(over="ignore", invalid="ignore"):  # refused later if not finite
            return (plus - minus) / (2 * h), size

    return quotient


def _check_against_central_differences(
    report: CheckReport,
    quotient: Callable[[float], tuple[np.ndarray, float]],
    product: np.ndarray,
    steps: tuple[float, ...],
    h_min: float,
    acc: Callable[[float], float],
    note: str,
    e: float,
    label: str,
    symbol: str,
    x: np.ndarray,
    dwarfed: bool,
    remedy: str = RESCALE,
) -> Any:
    """Compare an array-valued ``product`` with the Richardson extrapolant of ``quotient``
    started at ``steps`` (see :func:`fd.richardson_at_steps`).

    The tolerance is the estimate's own plus ``ULPS`` eps of ``|product|`` (named
    ``symbol`` in the message), and must resolve the product (see :func:`_require_resolved`;
    ``dwarfed`` says whether the default step dwarfs ``x``); returns the estimate for
    callers that reuse it.
    """
    choice = fd.richardson_at_steps(
        quotient,
        steps,
        prefer_smaller=dwarfed,
        order=2,
        rounding=lambda h, s: acc(s) / h,
        accuracy_note=note,
        reference=fd.magnitude(product),
        min_h=h_min,
    )
    est = choice.estimate
    own = fd.ULPS * e * fd.magnitude(product)
    source = est.describe() + f" + {fd.ULPS} eps {symbol} = {own:.1e}"
    source += _notes(choice, x, h_min)
    with np.errstate(over="ignore", invalid="ignore"):
        error = fd.magnitude(product - est.value)
        size = max(fd.magnitude(product), fd.magnitude(est.value))
    _judge(
        report,
        label,
        error,
        est.tolerance + own,
        size,
        source,
        choice=choice,
        x=x,
        h_min=h_min,
        required=dwarfed or choice.disagreed,
        remedy=remedy,
    )
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
    x_scale: float | None = None,
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
    x_scale : float, optional
        The length on which ``f`` varies near ``x``; by default the steps are chosen from
        the scales 1 and :math:`\|x\|_\infty` as in :func:`check_grad`.

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_jvp_vjp")
    x = vector_argument("x", x)
    n_directions = count_argument("n_directions", n_directions)
    length = _x_scale(x_scale)
    f_c, jvp_c, vjp_c = Counted("f", f), Counted("jvp", jvp), Counted("vjp", vjp)
    y_raw = np.asarray(f_c(x.copy()))
    y = as_float_array(report, "f(x)", y_raw)
    # the rounding allowed is that of the less precise of the input and output dtypes
    dtype = fd.float_dtype(x, y_raw) if y_raw.dtype.kind == "f" else x.dtype
    e = fd.eps(dtype)
    n, m = x.size, y.size
    acc, note = _accuracy(dtype, accuracy, "f")
    rng = np.random.default_rng(seed)
    steps, h_min = fd.start_steps(x, 1 / 3, dtype, length), fd.smallest_exact_step(x)
    dwarfed = _step_dwarfs(x, fd.step(x, 1 / 3, dtype))  # the point's regime, as in check_grad
    for i in range(n_directions):
        t = fd.direction(rng, x.shape, x.dtype)
        c = rng.standard_normal(y.shape).astype(x.dtype).astype(np.float64)
        jt = as_float_array(report, "jvp(x, t)", jvp_c(x.copy(), t.copy()), y.shape)
        jtc = as_float_array(report, "vjp(x, c)", vjp_c(x.copy(), c.astype(x.dtype)), x.shape)
        require_finite(report, "jvp(x, t)", jt)
        require_finite(report, "vjp(x, c)", jtc)

        def sensitivity(jt: np.ndarray = jt, jtc: np.ndarray = jtc, t: np.ndarray = t,
                        c: np.ndarray = c) -> float:
            """|J| |x|, |J| from below by the products at hand (no further calls)."""
            cc = fd.magnitude(c)
            norm_j = max(fd.magnitude(jt) / fd.magnitude(t), fd.magnitude(jtc) / cc if cc else 0)
            return fd.magnitude(x) * norm_j

        acc_t, note_t = _input_rounding(
            acc, note, accuracy, x, sensitivity, "|J||x|, |J| >= |Jt|/|t|, |J^T c|/|c|"
        )
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
            steps,
            h_min,
            acc_t,
            note_t,
            e,
            f"jvp(x, t) against central differences of f along {_where(i, seed)}",
            "|Jt|",
            x=x,
            dwarfed=dwarfed,
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
    x_scale: float | None = None,
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
    x_scale : float, optional
        The length on which ``grad`` varies near ``x``; by default the steps are chosen
        from the scales 1 and :math:`\|x\|_\infty` as in :func:`check_grad`.

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
    length = _x_scale(x_scale)
    grad_c, hvp_c = Counted("grad", grad), Counted("hvp", hvp)
    dtype = x.dtype
    e = fd.eps(dtype)
    n = x.size
    acc, note = _accuracy(dtype, accuracy, "grad")
    rng = np.random.default_rng(seed)
    steps, h_min = fd.start_steps(x, 1 / 3, x_scale=length), fd.smallest_exact_step(x)
    dwarfed = _step_dwarfs(x, fd.step(x, 1 / 3))  # the point's regime, as in check_grad
    directions = [fd.direction(rng, x.shape, dtype) for _ in range(n_directions)]
    products = []
    for i, v in enumerate(directions):
        hv = as_float_array(report, "hvp(x, v)", hvp_c(x.copy(), v.copy()), x.shape)
        require_finite(report, f"hvp(x, v) along {_where(i, seed)}", hv)
        products.append(hv)
    # |H| from below, by the products at hand
    acc, note = _input_rounding(
        acc,
        note,
        accuracy,
        x,
        # |H| from below, by the products at hand
        lambda: fd.magnitude(x) * max(
            fd.magnitude(hv) / fd.magnitude(v) for v, hv in zip(directions, products, strict=True)
        ),
        "|H||x|, |H| >= |Hv|/|v|",
    )
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
            steps,
            h_min,
            acc,
            note,
            e,
            f"hvp(x, v) against central differences of grad along {_where(i, seed)}",
            "|Hv|",
            x=x,
            dwarfed=dwarfed,
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
    x_scale: float | None = None,
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

    Each difference is a Richardson pair (steps ``h`` and ``h/2``), started at
    :math:`h \approx \epsilon^{1/5} s` (second differences) or :math:`\epsilon^{1/3} s`
    (of ``kl_grad``) for the scales :math:`s` of :func:`check_grad`.

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
    x_scale : float, optional
        The length on which the KL varies near ``params``; by default the steps are chosen
        from the scales 1 and :math:`\|\theta\|_\infty` as in :func:`check_grad`. Pass
        it where the KL varies on a scale far from both: features of order :math:`10^{-4}`
        give a Fisher of order :math:`10^{-8}` that the default steps cannot resolve (a
        doubled Fisher passes), and ``x_scale=1e4`` resolves it.

    Returns
    -------
    CheckReport
    """
    report = CheckReport("check_fvp")
    theta = vector_argument("params", params)
    if theta.ndim != 1:
        raise ValueError(f"params must be 1-D, got shape {theta.shape}")
    n_directions = max(2, count_argument("n_directions", n_directions))
    length = _x_scale(x_scale)
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
    steps = fd.start_steps(theta, 1 / 5, x_scale=length)
    h_min = fd.smallest_exact_step(theta)
    for i, (v, fv) in enumerate(zip(directions, products, strict=True)):
        vfv = float(v.ravel() @ fv.ravel())

        def curvature(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            kp, km = K(v, h), K(v, -h)
            return np.asarray((kp + km - 2 * k0) / (h * h)), max(abs(kp), abs(km), abs(k0))

        choice = fd.richardson_at_steps(
            curvature,
            steps,
            order=2,
            rounding=lambda h, s: 4 * acc(s) / (h * h),
            accuracy_note=note,
            reference=abs(vfv),
            min_h=h_min,
        )
        _judge_second_difference(
            report, choice, vfv, "v",
            f"v^T F v = {vfv:.10g} against (KL(theta||theta+hv) + KL(theta||theta-hv)) / h^2 "
            f"= {{estimate:.10g}} (twice the KL's second-order term) along {_where(i, seed)}",
            fd.magnitude(v) * fd.magnitude(fv), e, theta, h_min)

        def slope(h: float, v: np.ndarray = v) -> tuple[np.ndarray, float]:
            kp, km = K(v, h), K(v, -h)
            return np.asarray((kp - km) / (2 * h)), max(abs(kp), abs(km))

        grad_est = fd.richardson(
            slope, choice.estimate.h, order=2, rounding=lambda h, s: acc(s) / h,
            accuracy_note=note, retries=0,
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
                with np.errstate(over="ignore", invalid="ignore"):
                    quotient = (plus - minus) / (2 * h)
                return quotient, max(fd.magnitude(plus), fd.magnitude(minus))

            _check_against_central_differences(
                report,
                gradient_quotient,
                fv,
                fd.start_steps(theta, 1 / 3, x_scale=length),
                h_min,
                acc,
                note.replace("kl ", "kl_grad ", 1),
                e,
                "fvp(theta, v) against central differences of kl_grad(theta, .) along "
                + _where(i, seed),
                "|Fv|",
                x=theta,
                dwarfed=False,  # the Fisher's known limit (docs/testing.md): not required
                remedy=KL_REMEDY,
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

        choice = fd.richardson_at_steps(
            mixed,
            steps,
            order=2,
            rounding=lambda h, s: acc(s) / (h * h),
            accuracy_note=note,
            reference=abs(u_fv),
            min_h=h_min,
        )
        _judge_second_difference(
            report, choice, u_fv, "u",
            f"u^T F v = {u_fv:.10g} against the mixed second difference of KL(theta || .) "
            f"= {{estimate:.10g}} for directions #0, #1 (seed {seed})",
            fd.magnitude(u) * fd.magnitude(fv), e, theta, h_min)
    return report.count(fvp_c, kl_c)
