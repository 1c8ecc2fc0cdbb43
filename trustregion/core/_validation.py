"""Input checks shared by the core solvers.

Every public function validates its arguments once, up front, and raises a
``ValueError`` or ``TypeError`` that names the argument and the offending value.
The numerical loops behind them can then assume clean input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Matvec = Callable[[np.ndarray], np.ndarray]
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_C128 = np.dtype(np.complex128)
_C64 = np.dtype(np.complex64)


def float_vector(
    name: str, value: Any, *, allow_nonfinite: bool = False, allow_complex: bool = False
) -> np.ndarray:
    """Return ``value`` as a 1-D float32/float64 array, or raise.

    float32 and float64 are kept as they are; integers and bools become float64.
    Complex input (unless ``allow_complex``: complex64/complex128 are then kept) and other
    dtypes are rejected rather than silently cast.
    """
    arr = np.asarray(value)
    if arr.dtype is _F64 or arr.dtype is _F32:
        pass
    elif arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    elif allow_complex and arr.dtype in (_C64, _C128):
        pass
    elif arr.dtype not in (np.float32, np.float64):
        kinds = "float32, float64, complex64 or complex128" if allow_complex else (
            "real float32 or float64"
        )
        raise TypeError(f"{name} must be a {kinds} vector, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not allow_nonfinite and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite, got {name}[{bad}] = {arr[bad]}")
    return arr


# Values float() takes but that are not real numbers: a bool, a numeric string, and a complex
# number (whose imaginary part NumPy's float() drops with only a warning).
_NOT_REAL = (bool, np.bool_, str, bytes, complex, np.complexfloating)


def real_number(name: str, value: Any) -> float:
    """Return ``value`` as a float (possibly non-finite), or raise TypeError naming ``name``
    for anything that is not a real number (bools, strings and complex numbers included)."""
    if isinstance(value, _NOT_REAL) or (
        isinstance(value, np.ndarray) and value.dtype.kind not in "iuf"
    ):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def nonnegative(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float that is finite (or +inf if ``allow_inf``) and >= 0, or raise."""
    out = real_number(name, value)
    if allow_inf and out == math.inf:
        return out
    if not math.isfinite(out) or out < 0:
        what = "a number >= 0 (inf allowed)" if allow_inf else "finite and >= 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return out


def positive(name: str, value: Any) -> float:
    """Return ``value`` as a float that is finite and > 0, or raise."""
    out = nonnegative(name, value)
    if out == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def fraction_open(name: str, value: Any) -> float:
    """Return ``value`` as a float strictly inside (0, 1), or raise."""
    out = positive(name, value)
    if out >= 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return out


def count(name: str, value: Any, *, minimum: int = 0) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def function(name: str, value: Any) -> Callable[..., Any]:
    """Return ``value`` if it is callable, or raise a ``TypeError`` naming the argument."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def as_matvec(
    name: str, A: Any, n: int, *, allow_complex: bool = False, vector: str = "the vector"
) -> Matvec:
    """Turn a matrix-like ``A`` into a plain ``v -> A v`` callable.

    Accepts a callable, a dense ``(n, n)`` array, a scipy.sparse matrix or array,
    or a ``LinearOperator``. The returned callable does no checking of its own:
    callers check the output once per call where it matters. With ``allow_complex`` an
    explicit complex matrix is accepted if it is Hermitian (checked once, here: a callable
    cannot be checked, its curvature is checked by the solver instead).
    """
    if isinstance(A, np.ndarray):
        if A.dtype.kind not in ("fiubc" if allow_complex else "fiub"):
            raise TypeError(f"{name} must be a real matrix, got dtype {A.dtype}")
        _check_square(name, A.shape, n, vector)
        if A.dtype.kind == "c":
            _check_hermitian(name, A)
        return A.dot
    if type(A).__module__.startswith("scipy."):
        # imported here, not at module level: scipy.sparse costs ~0.2 s at import time and
        # only users who pass scipy operators need it
        import scipy.sparse as sp
        from scipy.sparse.linalg import LinearOperator

        if isinstance(A, LinearOperator):
            _check_square(name, A.shape, n, vector)
            return A.matvec
        if sp.issparse(A):
            _check_square(name, A.shape, n, vector)
            if A.dtype.kind == "c":
                if not allow_complex:
                    raise TypeError(f"{name} must be a real matrix, got dtype {A.dtype}")
                _check_hermitian(name, A)
            return A.dot
    if callable(A):
        return A
    raise TypeError(
        f"{name} must be a callable matvec, an ndarray, a scipy.sparse matrix or a "
        f"LinearOperator, got {type(A).__name__}"
    )


def is_complex_operator(A: Any) -> bool:
    """True for an explicit matrix or LinearOperator that declares a complex dtype."""
    if isinstance(A, np.ndarray):
        return A.dtype.kind == "c"
    if not type(A).__module__.startswith("scipy."):
        return False  # a plain callable declares nothing (and getattr on it is slow)
    dtype = getattr(A, "dtype", None)
    if dtype is None or not hasattr(A, "shape"):
        return False
    try:
        return np.dtype(dtype).kind == "c"
    except TypeError:
        return False


def _check_hermitian(name: str, A: Any) -> None:
    """Raise unless the explicit complex matrix ``A`` equals its conjugate transpose.

    The tolerance is rounding-sized: ``|A - A^H|`` below ``8 eps max|A|`` entry-wise.
    """
    eps = float(np.finfo(A.dtype).eps)
    if isinstance(A, np.ndarray):
        skew = float(np.max(np.abs(A - A.conj().T))) if A.size else 0.0
        scale = float(np.max(np.abs(A))) if A.size else 0.0
    else:
        diff = A - A.conj().T
        skew = float(abs(diff).max()) if diff.nnz else 0.0
        scale = float(abs(A).max()) if A.nnz else 0.0
    if skew > 8.0 * eps * scale:
        raise ValueError(
            f"{name} must be Hermitian (equal to its conjugate transpose) for CG, but "
            f"max |{name} - {name}^H| = {skew:.3e} (max |{name}| = {scale:.3e})"
        )


def _check_square(name: str, shape: tuple[int, ...], n: int, vector: str = "the vector") -> None:
    """Raise unless ``shape`` is ``(n, n)``; ``vector`` names the vector it must match."""
    if len(shape) != 2 or shape[0] != n or shape[1] != n:
        raise ValueError(
            f"{name} must have shape ({n}, {n}) to match {vector} ({n},), got {shape}"
        )


def matvec_output(name: str, out: Any, n: int, dtype: np.dtype) -> np.ndarray:
    """Check a matvec's output shape and return it as a vector of ``dtype``.

    A wrong shape is misuse and raises; non-finite values are left for the
    caller to report as a status.
    """
    arr = np.asarray(out)
    if arr.shape != (n,):
        if arr.size == n and arr.ndim == 2:
            arr = arr.reshape(n)  # an (n, 1) column from a matrix operator
        else:
            raise ValueError(f"{name} returned shape {arr.shape}, expected ({n},)")
    if arr.dtype != dtype:
        if arr.dtype.kind == "c" and np.dtype(dtype).kind != "c":
            # a silent cast would drop the imaginary part (numpy only warns)
            raise TypeError(
                f"{name} returned complex values (dtype {arr.dtype}) for a real input: the "
                f"operator must map real vectors to real vectors"
            )
        if arr.dtype.kind not in "fiubc":
            raise TypeError(f"{name} returned dtype {arr.dtype}, expected a numeric vector")
        arr = arr.astype(dtype)
    return arr
