"""Call counting, reports and the failure messages every check shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Counted:
    """Wrap a user function and count its calls."""

    def __init__(self, name: str, function: Any) -> None:
        if not callable(function):
            raise TypeError(f"{name} must be callable, got {type(function).__name__}")
        self.name = name
        self.function: Callable[..., Any] = function
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


@dataclass(frozen=True)
class Comparison:
    """One comparison a check made: what, the error found and the tolerance allowed."""

    what: str
    error: float
    tolerance: float
    source: str


@dataclass
class CheckReport:
    """What a check compared and how many calls of each function under test it spent.

    Attributes
    ----------
    check : str
        The check's name, e.g. ``"check_fvp"``.
    comparisons : list of Comparison
        Every comparison made (all passed, or the check would have raised).
    calls : dict of str to int
        Calls of each function under test, by argument name.
    """

    check: str
    comparisons: list[Comparison] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def worst_ratio(self) -> float:
        """Largest error / tolerance over the comparisons (< 1 since the check passed)."""
        ratios = [
            c.error / c.tolerance if c.tolerance > 0 else (0.0 if c.error == 0 else np.inf)
            for c in self.comparisons
        ]
        return max(ratios, default=0.0)

    def compare(self, what: str, error: float, tolerance: float, source: str) -> None:
        """Record a comparison, or raise an AssertionError that explains it."""
        if not (error <= tolerance):  # also catches NaN
            raise AssertionError(
                f"{self.check}: {what}\n"
                f"  error found {error:.3e} > tolerance {tolerance:.3e}\n"
                f"  tolerance = {source}"
            )
        self.comparisons.append(Comparison(what, float(error), float(tolerance), source))

    def fail(self, what: str) -> None:
        raise AssertionError(f"{self.check}: {what}")

    def resolve(
        self, what: str, tolerance: float, magnitude: float, source: str, remedy: str
    ) -> None:
        """Fail unless ``tolerance`` is below half of ``magnitude``, saying why and what to do.

        A tolerance of at least half the compared quantity passes that quantity doubled,
        halved or zeroed, so the comparison could not tell a wrong result from a right one:
        passing it would be a silent false negative.
        """
        if not (tolerance < 0.5 * magnitude):
            raise AssertionError(
                f"{self.check}: cannot resolve {what}\n"
                f"  the tolerance {tolerance:.3e} is not below half the magnitude "
                f"{magnitude:.3e} of the compared quantity, so a result off by a factor 2, "
                f"1/2 or of the wrong sign would pass; {remedy}\n"
                f"  tolerance = {source}"
            )

    def count(self, *functions: Counted) -> CheckReport:
        for f in functions:
            self.calls[f.name] = f.calls
        return self


def as_float_array(
    report: CheckReport, name: str, value: Any, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` (when given), or fail the check saying so."""
    reject_complex(name, value, "returned")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        report.fail(f"{name} returned {type(value).__name__}, which is not a real array")
        raise  # unreachable: fail raises
    if shape is not None and arr.shape != shape:
        report.fail(f"{name} returned shape {arr.shape}, expected {shape}")
    return arr


def reject_complex(name: str, value: Any, verb: str = "is") -> None:
    """TypeError if ``value`` holds complex numbers: a cast to float64 would drop their
    imaginary parts with only a ComplexWarning, and the checks compare real values."""
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        return  # not an array at all: the caller's conversion reports it
    if kind == "c":
        raise TypeError(f"{name} {verb} complex (dtype {np.asarray(value).dtype}); it must be real")


def require_finite(report: CheckReport, name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = ", ".join(str(int(i)) for i in bad)
        report.fail(f"{name} is not finite: {name}[{where}] = {arr[tuple(bad)]}")


def vector_argument(name: str, value: Any) -> np.ndarray:
    """A user's point ``x``: a finite float32/float64 array (ints become float64)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a real float32 or float64 array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def number_argument(name: str, value: Any, below: float = math.inf) -> float:
    """``value`` as a float in ``[0, below)``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (0 <= value < below):
        bound = "finite" if below == math.inf else f"< {below:g}"
        raise ValueError(f"{name} must be {bound} and >= 0, got {value!r}")
    return float(value)


def count_argument(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def assert_close(
    actual: Any, desired: Any, *, rtol: float = 1e-7, atol: float = 0.0, what: str = "values"
) -> None:
    r"""Assert ``|actual - desired| <= atol + rtol |desired|`` elementwise, explaining a failure.

    Unlike a bare boolean, the message reports the number of mismatched entries, the
    largest absolute error and the largest relative error with their indices and
    values, and where non-finite values disagree.

    Parameters
    ----------
    actual, desired : array_like
        Same shape (scalars are arrays of shape ``()``), real: complex values are a
        ``TypeError``. NaN matches NaN, ``inf`` matches ``inf`` of the same sign. When
        both are integer arrays they are compared exactly (no rounding to float64).
    rtol, atol : float
        Relative and absolute tolerance (>= 0).
    what : str
        What is compared, for the message.

    Raises
    ------
    AssertionError
        With the largest absolute and relative errors and where they are.

    Examples
    --------
    >>> import numpy as np
    >>> from trustregion.testing import assert_close
    >>> assert_close([1.0, 2.0], [1.0, 2.0 + 1e-12], rtol=1e-9)
    >>> assert_close([[1.0, 2.0]], [[1.0, 2.5]], rtol=1e-3)
    Traceback (most recent call last):
    ...
    AssertionError: assert_close: values differ in 1 of 2 entries (rtol=0.001, atol=0)
      largest absolute error 0.5 at index (0, 1): actual 2, desired 2.5
      largest relative error 0.2 at index (0, 1): actual 2, desired 2.5
    """
    if rtol < 0 or atol < 0 or not (np.isfinite(rtol) and np.isfinite(atol)):
        raise ValueError(f"rtol and atol must be finite and >= 0, got rtol={rtol}, atol={atol}")
    reject_complex("actual", actual)
    reject_complex("desired", desired)
    a = np.asarray(actual)
    d = np.asarray(desired)
    if a.shape != d.shape:
        raise AssertionError(
            f"assert_close: {what} have different shapes: actual {a.shape}, desired {d.shape}"
        )
    # integers beyond 2**53 would round together in float64: compare them exactly
    exact = None
    a_int = d_int = np.empty(0, dtype=object)
    if a.dtype.kind in "iu" and d.dtype.kind in "iu":
        a_int, d_int = a.astype(object), d.astype(object)
        exact = np.vectorize(lambda p, q: abs(p - q) <= atol + rtol * abs(q), otypes=[bool])(
            a_int, d_int
        )
    a = a.astype(np.float64)
    d = d.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(d)
    same_nonfinite = ~finite & ((a == d) | (np.isnan(a) & np.isnan(d)))
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(finite, np.abs(a - d), 0.0)
        rel_err = np.where(finite & (d != 0), abs_err / np.abs(np.where(d == 0, 1.0, d)), 0.0)
        rel_err = np.where(finite & (d == 0) & (abs_err > 0), np.inf, rel_err)
    bad = (finite & ~(abs_err <= atol + rtol * np.abs(d))) | (~finite & ~same_nonfinite)
    if exact is not None:
        bad = ~exact
        abs_err = np.abs(a_int - d_int).astype(np.float64)
        rel_err = np.where(d != 0, abs_err / np.abs(np.where(d == 0, 1.0, d)), np.inf)
        rel_err = np.where(abs_err == 0, 0.0, rel_err)
    if not np.any(bad):
        return
    lines = [
        f"assert_close: {what} differ in {int(bad.sum())} of {a.size} entries "
        f"(rtol={rtol:g}, atol={atol:g})"
    ]

    def at(flat: int) -> str:
        index = np.unravel_index(flat, a.shape) if a.shape else ()
        where = f"index {tuple(int(i) for i in index)}"
        if exact is not None:
            return f"{where}: actual {a_int[index]}, desired {d_int[index]}"
        return f"{where}: actual {a[index]:.17g}, desired {d[index]:.17g}"

    nonfinite = np.flatnonzero((~finite & ~same_nonfinite).ravel())
    if nonfinite.size:
        lines.append(
            f"  non-finite mismatch at {nonfinite.size} entries, first at {at(int(nonfinite[0]))}"
        )
    if np.any(finite):
        lines.append(f"  largest absolute error {abs_err.max():.3g} at {at(int(abs_err.argmax()))}")
        lines.append(f"  largest relative error {rel_err.max():.3g} at {at(int(rel_err.argmax()))}")
    raise AssertionError("\n".join(lines))
