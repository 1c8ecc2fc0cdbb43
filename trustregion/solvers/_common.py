"""Helpers shared by the solvers: scipy's result object, scalar outputs, callbacks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from trustregion.core import _validation as v

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult


def optimize_result(**fields: Any) -> OptimizeResult:
    """A ``scipy.optimize.OptimizeResult``; scipy.optimize is imported on first use because it
    costs ~0.25 s at import time, which users of the rest of the package should not pay."""
    from scipy.optimize import OptimizeResult

    return OptimizeResult(**fields)


def scalar_output(name: str, value: Any) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"{name} must return a scalar, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must return a real number, got {value!r}")
    return float(arr.reshape(()))


def wrap_callback(
    callback: Callable[..., Any] | None,
) -> Callable[[OptimizeResult], Any] | None:
    """scipy's convention: ``callback(intermediate_result=res)`` or ``callback(xk)``."""
    if callback is None:
        return None
    v.function("callback", callback)
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        params = set()
    if params == {"intermediate_result"}:
        # x is the solver's own array: the callback gets a copy, as callback(xk) does
        return lambda res: callback(intermediate_result=_with_x_copied(res))
    return lambda res: callback(np.copy(res.x))


def _with_x_copied(res: OptimizeResult) -> OptimizeResult:
    res["x"] = np.copy(res["x"])
    return res


def kept_output(out: np.ndarray, raw: Any) -> np.ndarray:
    """``out`` (a user function's checked output ``raw``), copied if it still is the user's
    array or a view of one: a solver that keeps it across later calls must not see a buffer
    the function fills and returns again change under it."""
    return out.copy() if out is raw or out.base is not None else out


def real_vector_output(name: str, value: Any, n: int) -> np.ndarray:
    """A user function's vector output as float64 of shape ``(n,)``, or raise naming it.

    Complex output is rejected, not cast: ``astype`` would drop the imaginary part with
    only numpy's ``ComplexWarning``. Non-finite values pass, for the caller to report.
    """
    if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (n,):
        return value  # the common case, checked in three comparisons
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(
            f"{name} returned complex values (dtype {arr.dtype}); it must return real numbers"
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must return real numbers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        if arr.size == n and arr.ndim == 2:
            arr = arr.reshape(n)  # an (n, 1) column from a matrix product
        else:
            raise ValueError(f"{name} returned shape {arr.shape}, expected ({n},)")
    return arr.astype(np.float64, copy=False)
