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


def step(x: np.ndarray, power: float, dtype: Any = None) -> float:
    """Power-of-two step ``~ eps**power * max(1, |x|_inf)``, exact for ``x ± h v``.

    ``eps`` is that of ``dtype`` (default ``x.dtype``): pass the less precise of the input
    and output dtypes, whose rounding the step has to balance.
    """
    dtype = x.dtype if dtype is None else dtype
    scale = max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
    h = 2.0 ** math.floor(math.log2(eps(dtype) ** power * scale))
    return max(h, smallest_exact_step(x))


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
) -> Estimate:
    """Extrapolate ``quotient`` (returning the quotient and the largest value differenced).

    If the pair disagrees by more than 1% of the result (h is outside the asymptotic
    range) and by more than the rounding bound (which a smaller ``h`` would only inflate),
    ``h`` is divided by 16 and the pair retaken, ``retries`` times at most, while ``h/2``
    stays at or above ``min_h``. After those, it goes on shrinking (up to
    ``EXTRA_RETRIES`` more times) while the disagreement still dominates the rounding bound
    of the next, smaller pair: the function then varies on a scale far below the default
    step (``x`` of order 1e-8, say), and a smaller step is what resolves its derivative.
    """
    extra = EXTRA_RETRIES
    factor = 2.0**order
    while True:
        d1, s1 = quotient(h)
        d2, s2 = quotient(h / 2)
        value = (factor * d2 - d1) / (factor - 1.0)
        truncation = float(np.linalg.norm(np.ravel(d1 - d2)))
        scale = max(s1, s2)
        magnitude = max(float(np.linalg.norm(np.ravel(value))), abs(reference))
        bound = (factor * rounding(h / 2, scale) + rounding(h, scale)) / (factor - 1.0)
        # a disagreement within the rounding bound is noise that a smaller h only amplifies
        resolved = truncation <= 1e-2 * magnitude or truncation <= bound or h / 32 < min_h
        if resolved or (retries == 0 and (extra == 0 or rounding(h / 32, scale) >= truncation)):
            return Estimate(value, truncation, bound, h, order, scale, accuracy_note)
        if retries == 0:
            extra -= 1
        else:
            retries -= 1
        h /= 16


def magnitude(a: Any) -> float:
    arr = np.asarray(a, dtype=np.float64)
    return float(np.linalg.norm(arr.ravel())) if arr.size else 0.0
