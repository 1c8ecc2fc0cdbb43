"""Adversarial tests of cg's true-residual check and restarts (residual replacement).

Each test here reproduces a bug found by fuzzing the check added in 672bf86 and fails
without its fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status


def _exact_residual(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
    wide = np.clongdouble if np.iscomplexobj(A) or np.iscomplexobj(x) else np.longdouble
    return float(np.sqrt(np.sum(np.abs(b.astype(wide) - A.astype(wide) @ x.astype(wide)) ** 2)))


@pytest.mark.parametrize(
    "dtype, big, small, atol",
    [
        (np.float32, 1e20, 1e-20, 1e-30),
        (np.float64, 1e200, 1e-200, 1e-250),
        (np.complex128, 1e200, 1e-200, 1e-250),
    ],
)
@pytest.mark.parametrize("callable_operator", [False, True])
def test_a_warm_start_whose_rescaled_units_overflow_is_checked_in_the_callers_units(
    dtype, big, small, atol, callable_operator
):
    # b's entries span more than the dtype's range relative to the warm start's residual
    # (r0 = [0, 3 small]): the iteration runs on c_b r0 with c_b ~ 1/small, where x0 c_b and
    # b c_b overflow. The answer is exact in the caller's units, and its true residual there
    # is 0; it was checked in the rescaled units, where it came out inf - inf: NON_FINITE
    # ("the matvec A returned a non-finite value ... computing the true residual") although
    # the operator never returned one.
    A = np.diag([2.0, 3.0]).astype(dtype)
    b = np.array([2 * big, 3 * small], dtype=dtype)
    x0 = np.array([big, 0.0], dtype=dtype)
    calls = [0]

    def matvec(u):
        calls[0] += 1
        out = A @ u
        assert np.all(np.isfinite(out))
        return out

    res = tr.cg(matvec if callable_operator else A, b, x0=x0, rtol=0.0, atol=atol)
    assert res.status is Status.CONVERGED, res.message
    assert np.all(np.isfinite(res.x))
    assert _exact_residual(A, b, res.x) <= atol
    assert res.true_residual_norm is not None and res.true_residual_norm <= atol
    if callable_operator:
        assert res.n_matvec == calls[0]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 7),
       dtype=st.sampled_from([np.float32, np.float64]), log_rtol=st.floats(-16, -4),
       warm=st.booleans())
def test_maxiter_bounds_the_operator_calls_through_restarts(seed, n, dtype, log_rtol, warm):
    # a check that leads to a restart counts as an iteration: at most maxiter + 1 products
    # (one more with x0), the limit check_cg_contract holds any CG to (restarts on float32
    # systems with tolerances below float32's rounding took 33 products for maxiter = 30)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    cond = 10.0 ** rng.uniform(0, 16 if dtype is np.float64 else 8)
    A = (Q * np.geomspace(1.0, cond, n)) @ Q.T
    A = ((A + A.T) / 2).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    x0 = (1e6 * rng.standard_normal(n)).astype(dtype) if warm else None
    calls = []

    def matvec(v):
        calls.append(1)
        return A @ v

    maxiter = 10 * n
    res = tr.cg(matvec, b, x0=x0, rtol=10.0**log_rtol, maxiter=maxiter)
    assert res.n_matvec == len(calls)
    assert len(calls) <= maxiter + 1 + warm, res.message
