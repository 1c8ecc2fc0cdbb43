r"""Finite differences whose error is estimated, not guessed.

Every derivative the checks compare against is a central difference taken at a step
``h`` and again at ``h/2`` (a Richardson pair). For a difference quotient with truncation
error :math:`c h^p + O(h^{p+2})`,

.. math::

    D(h) - D(h/2) = (1 - 2^{-p})\, c h^p + \dots, \qquad
    R = \frac{2^p D(h/2) - D(h)}{2^p - 1} = \text{exact} + O(h^{p+2}),

so the checks compare with the extrapolant :math:`R` and allow
:math:`|D(h) - D(h/2)|` for truncation: that is :math:`2^p - 1` times the estimated
error of :math:`D(h/2)` and far more than the error of :math:`R`. Rounding is bounded
separately from the dtype's machine epsilon, the magnitude of the values differenced and
the step: a function accurate to ``accuracy`` gives a central first difference accurate to
``accuracy / h`` and a second difference accurate to ``accuracy / h^2``.

The perturbations are exact in the input dtype where it matters: ``h`` is a power of two,
every direction is rounded to a multiple of :math:`2^{-10}` in :math:`[-1, 1]`, and ``h`` is
large enough that ``x_i + h v_i`` needs no rounding whenever :math:`|x_i| \ge h` (components
smaller than ``h`` are off by at most :math:`\epsilon h`, far below the rounding bound). So
the function sees ``x + h v`` (in float32 too) and no "input rounding" term is guessed.

Which ``h`` to start at depends on the length on which the function varies near ``x``:
``max(1, |x|_inf)`` by default, and far from unit scale ``min(1, |x|_inf)`` too
(:func:`start_steps`), with the estimate to trust chosen among them
(:func:`richardson_at_steps`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: directions are multiples of 2**-DIRECTION_BITS in [-1, 1]
DIRECTION_BITS = 10
#: a function is assumed accurate to this many ulps of the largest value differenced
ULPS = 64
#: further divisions of h by 16 allowed while the Richardson pair is truncation-dominated
EXTRA_RETRIES = 8
#: the steps for the scales 1 and |x|_inf are both tried where |x|_inf is outside
#: [1 / SCALE_RATIO, SCALE_RATIO], or below 1 and under 4 default steps (float32)
SCALE_RATIO = 2.0**10
#: no step is below this: a second difference divides by h^2, which must stay normal
SMALLEST_STEP = 2.0**-500
#: a smaller step's estimate confirms a larger one's when they agree to the larger one's
#: tolerance plus this fraction of the smaller one's (mostly its rounding bound of 64 ulps,
#: which a function rounding to a few ulps stays far inside)
CONFIRM_FRACTION = 1 / 8
#: where preferred, the smaller step's estimate is kept when its tolerance is below this
#: fraction of its value: it resolves the derivative on its own
RESOLVES = 1 / 16
#: far from unit scale, Richardson pairs are retaken until they settle to this fraction
FAR_SETTLE = 1e-3


def eps(dtype: Any) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def float_dtype(*arrays: Any) -> np.dtype:
    """float32 if any array is float32 (the least precise decides), else float64."""
    dtypes = [np.asarray(a).dtype for a in arrays]
    if any(d == np.float32 for d in dtypes):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def direction(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A random direction with entries that are multiples of 2**-10, max-abs entry 1."""
    v = rng.standard_normal(shape)
    top = np.max(np.abs(v)) if v.size else 1.0
    v = np.round(v / top * 2.0**DIRECTION_BITS) / 2.0**DIRECTION_BITS
    if v.size and not np.any(v):
        v.flat[0] = 1.0
    return v.astype(dtype)


def quantize(v: Any, dtype: Any) -> np.ndarray:
    """``v`` scaled to max-abs 1 and rounded like :func:`direction` (for user directions)."""
    v = np.asarray(v, dtype=np.float64)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        raise ValueError("a direction must be finite and nonzero")
    return (np.round(v / top * 2.0**DIRECTION_BITS) / 2.0**DIRECTION_BITS).astype(dtype)


def step(x: np.ndarray, power: float, dtype: Any = None, scale: float | None = None) -> float:
    """Power-of-two step ``~ eps**power * scale``, exact for ``x ± h v``.

    ``scale`` is the length on which the function is taken to vary, by default
    ``max(1, |x|_inf)``; ``eps`` is that of ``dtype`` (default ``x.dtype``): pass the less
    precise of the input and output dtypes, whose rounding the step has to balance. The step
    is never below :func:`smallest_exact_step`, nor ``SMALLEST_STEP`` (a scale of 1e-300).
    """
    dtype = x.dtype if dtype is None else dtype
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
    target = eps(dtype) ** power * scale
    smallest = max(smallest_exact_step(x), SMALLEST_STEP)
    if not target > smallest:  # also a scale that underflows
        return smallest
    return max(2.0 ** math.floor(math.log2(target)), smallest)


def start_steps(
    x: np.ndarray, power: float, dtype: Any = None, x_scale: float | None = None
) -> tuple[float, ...]:
    """The steps a difference is started at: one per scale on which the function may vary.

    Given ``x_scale``, only its step. Otherwise the default step, for the scale
    ``max(1, |x|_inf)``, and, where ``|x|_inf`` is nonzero and far from 1 (outside
    ``[1 / SCALE_RATIO, SCALE_RATIO]``, or below 1 and under 4 default steps, which in
    float32 is below 0.016), the smaller step for ``min(1, |x|_inf)`` as well: a function
    of a tiny ``x`` may vary on the scale of ``x`` or on the scale 1, one of a huge ``x`` on
    either too, and nothing at the point tells which (see :func:`richardson_at_steps`). The
    smaller step is not below :func:`smallest_exact_step`, and is left out if that leaves it
    no smaller than the default, or so small that the values it differences may be
    subnormal (below ``tiny / eps`` of the dtype: 1e-31 in float32), where they round to an
    absolute spacing rather than to 64 eps of themselves.
    """
    if x_scale is not None:
        return (step(x, power, dtype, x_scale),)
    default = step(x, power, dtype)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    tiny = top < 1.0 / SCALE_RATIO or top < 4 * default
    if top == 0.0 or not (tiny or top > SCALE_RATIO):
        return (default,)
    # 4 times the plain eps^power s (the default's, kept as it was): the pair's h^2 truncation
    # balances a rounding bound of 64 ulps near h ~ (64 eps)^(1/3) s
    other = step(x, power, dtype, 4 * min(1.0, top))
    # near the subnormal range values round absolutely, not to 64 eps of themselves
    rounds = np.dtype(x.dtype if dtype is None else dtype)
    normal = float(np.finfo(rounds).tiny) / eps(rounds)
    return (default, other) if normal <= other < default else (default,)


def smallest_exact_step(x: np.ndarray) -> float:
    """Smallest power-of-two ``h`` for which ``x ± (h/2) v`` is exact for every direction."""
    dtype = x.dtype
    top = float(np.max(np.abs(x))) if x.size else 0.0
    # x_i +- (h/2) v_i is exact when (h/2) 2^-10 is a multiple of 2 ulp(|x| + h)
    ulp = float(np.spacing(np.asarray(2.0 * top + 1e-300, dtype=dtype)))
    return 2.0 ** math.ceil(math.log2(ulp * 2.0 ** (DIRECTION_BITS + 2)))


def shifted(x: np.ndarray, t: float, v: np.ndarray) -> np.ndarray:
    """``x + t v`` in x's dtype; exact by the choice of ``t`` and ``v``."""
    return (x.astype(np.float64) + t * v.astype(np.float64)).astype(x.dtype)


@dataclass(frozen=True)
class Estimate:
    """A Richardson-extrapolated finite difference with its error budget."""

    value: np.ndarray
    truncation: float
    rounding: float
    h: float
    order: int
    scale: float
    accuracy_note: str

    @property
    def tolerance(self) -> float:
        return self.truncation + self.rounding

    @property
    def settled(self) -> bool:
        """The pair agrees to 1% of the estimate's own size, or within rounding: ``h`` is in
        the asymptotic range (judged without any reference value)."""
        return self.truncation <= 1e-2 * magnitude(self.value) or self.truncation <= self.rounding

    def describe(self) -> str:
        return (
            f"Richardson truncation estimate |D(h) - D(h/2)| = {self.truncation:.2e} "
            f"(central differences, h = 2^{round(math.log2(self.h))} = {self.h:.3g} and h/2, "
            f"order {self.order}) + rounding bound {self.rounding:.2e} "
            f"({self.accuracy_note}, differenced values up to {self.scale:.3g})"
        )


def richardson(
    quotient: Callable[[float], tuple[np.ndarray, float]],
    h: float,
    *,
    order: int,
    rounding: Callable[[float, float], float],
    accuracy_note: str,
    reference: float = 0.0,
    min_h: float = 0.0,
    retries: int = 2,
    settle: float = 1e-2,
    extra_retries: int = EXTRA_RETRIES,
) -> Estimate:
    """Extrapolate ``quotient`` (returning the quotient and the largest value differenced).

    If the pair disagrees by more than ``settle`` (1%) of the result (h is outside the
    asymptotic range) and by more than the rounding bound (which a smaller ``h`` would only
    inflate), ``h`` is divided by 16 and the pair retaken, ``retries`` times at most, while
    ``h/2`` stays at or above ``min_h``. After those, it goes on shrinking (up to
    ``extra_retries`` more times) while the disagreement still dominates the rounding bound
    of the next, smaller pair: the function then varies on a scale far below the default
    step (``x`` of order 1e-8, say), and a smaller step is what resolves its derivative.
    A pair that overflowed (a disagreement that is not finite) is retaken the same way.
    """
    extra = extra_retries
    factor = 2.0**order
    while True:
        d1, s1 = quotient(h)
        d2, s2 = quotient(h / 2)
        # quotients that overflowed give a NaN or infinite estimate, which the checks refuse
        with np.errstate(over="ignore", invalid="ignore"):
            value = (factor * d2 - d1) / (factor - 1.0)
            if not np.all(np.isfinite(value)) and np.all(np.isfinite(d1) & np.isfinite(d2)):
                value = d2 + (d2 - d1) / (factor - 1.0)  # the same, without 4 d2 overflowing
            truncation = magnitude(d1 - d2)
        size = max(magnitude(value), abs(reference))
        scale = max(s1, s2)
        bound = (factor * rounding(h / 2, scale) + rounding(h, scale)) / (factor - 1.0)
        # a disagreement within the rounding bound is noise that a smaller h only amplifies
        # a pair that overflowed is retaken at smaller steps like any unresolved one
        resolved = (
            math.isfinite(truncation) and (truncation <= settle * size or truncation <= bound)
        ) or h / 32 < min_h
        if resolved or (retries == 0 and (extra == 0 or rounding(h / 32, scale) >= truncation)):
            return Estimate(value, truncation, bound, h, order, scale, accuracy_note)
        if retries == 0:
            extra -= 1
        else:
            retries -= 1
        h /= 16


@dataclass(frozen=True)
class Choice:
    """The estimate a check compares with, among Richardson estimates started at several
    steps (:func:`richardson_at_steps`)."""

    estimate: Estimate
    #: the estimate started at the first (default) step
    first: Estimate
    #: the estimate started at the last (smallest) step
    last: Estimate
    #: the estimates were tried at more than one step
    tried: bool
    #: they disagreed beyond the sum of their tolerances, and the smaller step's was kept
    disagreed: bool
    #: why the estimate kept was kept, for the message
    reason: str = ""


def richardson_at_steps(
    quotient: Callable[[float], tuple[np.ndarray, float]],
    steps: tuple[float, ...],
    *,
    prefer_smaller: bool = False,
    **kwargs: Any,
) -> Choice:
    """:func:`richardson` started at each of ``steps`` (largest first), and the one to trust.

    The larger step's truncation estimate is what can be fooled: by a function varying on
    a far smaller scale (the pair ``D(h)``, ``D(h/2)`` both tiny and alike for a
    ``sin(x / 1e-8)`` sampled hundreds of periods apart, or both on the far slope of a
    softplus whose bend is at the scale of ``x``), while the smaller step's rounding is
    bounded from the function's accuracy. So the smaller step's estimate is kept if the two
    disagree beyond the sum of their tolerances, if the larger one is not
    :attr:`Estimate.settled`, or if the smaller one does not confirm it (they agree only
    beyond the larger one's tolerance plus ``CONFIRM_FRACTION`` of the smaller one's: an
    estimate whose rounding bound of 64 ulps allows the difference, but whose value, off by
    the few ulps a function really rounds to, says otherwise); else the tighter one (for a
    function of the scale 1 near a tiny ``x``, the larger step's, which the smaller one
    confirms). A non-finite estimate (values overflowing at the larger step) disagrees with
    any other.

    Where there are several steps (far from unit scale), each pair is taken until it
    settles to ``FAR_SETTLE`` (0.1%) rather than 1%: a pair at a step a few times the scale
    of ``x`` can settle to 1% while off by as much, and only a smaller step shows it; and
    the first estimate does not go on shrinking past its ``retries`` (the smaller steps
    cover the scales below it).

    ``prefer_smaller`` (where the default step dwarfs ``x``, sampling a function of ``x``'s
    own scale hundreds of its lengths apart) keeps the smaller step's estimate as well
    wherever it resolves the derivative on its own (settled, and a tolerance below
    ``RESOLVES`` of its value): the larger step's pair can then agree with itself, and be
    confirmed within the smaller one's rounding bound, while off by several tolerances.
    """
    far = len(steps) > 1
    if far:
        kwargs = {"settle": FAR_SETTLE, **kwargs}
    # the smaller steps cover the scales below the first: it need not shrink down to them
    first = richardson(quotient, steps[0], extra_retries=0 if far else EXTRA_RETRIES, **kwargs)
    chosen, other, disagreed, reason = first, first, False, ""
    for h in steps[1:]:
        other = richardson(quotient, h, **kwargs)
        with np.errstate(over="ignore", invalid="ignore"):
            gap = magnitude(np.asarray(chosen.value, dtype=np.float64) - other.value)
        if not (gap <= chosen.tolerance + other.tolerance):  # also NaN and inf
            chosen, disagreed, reason = other, True, "disagreed"
        elif not chosen.settled:
            chosen, reason = other, "unsettled"
        elif (
            prefer_smaller
            and other.settled
            and other.tolerance <= RESOLVES * magnitude(other.value)
        ):
            chosen, reason = other, "resolves"
        elif not (gap <= chosen.tolerance + CONFIRM_FRACTION * other.tolerance):
            chosen, reason = other, "unconfirmed"
        elif other.settled and other.tolerance < chosen.tolerance:
            chosen, reason = other, "tighter"
        else:
            reason = "looser"
    return Choice(chosen, first, other, len(steps) > 1, disagreed, reason)


def magnitude(a: Any) -> float:
    """The 2-norm, computed scaled where squares would overflow or underflow."""
    arr = np.asarray(a, dtype=np.float64).ravel()
    if not arr.size:
        return 0.0
    # (a Python max is the cheaper for the short vectors the checks mostly see; NaN gives NaN
    # through the dot below either way)
    top = max(map(abs, arr.tolist())) if arr.size <= 64 else float(np.abs(arr).max())
    if 1e-150 < top < 1e150:  # the squares neither overflow nor underflow
        return math.sqrt(float(arr.dot(arr)))  # as np.linalg.norm computes it
    if top == 0.0 or not math.isfinite(top):
        return top  # also NaN
    scaled = arr / top
    return top * math.sqrt(float(scaled.dot(scaled)))
