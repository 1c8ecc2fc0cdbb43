"""Fuzzing round s12: what user functions do to the solvers *during* the iteration.

Each test is a regression test of a bug found by the round (see the docstrings).
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

import trustregion as tr
from trustregion import Status

X0 = np.array([-1.2, 1.0])
ALL_METHODS = ["trust-ncg", "trust-krylov", "trust-exact", "dogleg"]


def _hessian_kw(method):
    if method in ("trust-ncg", "trust-krylov"):
        return {"hessp": rosen_hess_prod}
    return {"hess": rosen_hess}


class _BufferFunAndGrad:
    """``fun`` with ``jac=True`` that writes the gradient into one buffer it returns."""

    def __init__(self):
        self.buf = np.zeros(2)

    def __call__(self, x):
        self.buf[:] = rosen_der(x)
        return rosen(x), self.buf


@pytest.mark.parametrize("method", ALL_METHODS)
def test_minimize_gradient_buffer_reused_by_fun(method):
    """jac=True with a reused gradient buffer: every rejected trial overwrote the kept g,
    so the model used the gradient of the rejected point (trust-ncg took 113 iterations
    instead of 29; dogleg stopped at status 2 far from the minimum)."""
    ref = tr.minimize(rosen, X0, jac=rosen_der, method=method, **_hessian_kw(method))
    res = tr.minimize(_BufferFunAndGrad(), X0, jac=True, method=method, **_hessian_kw(method))
    assert res.success
    assert res.nit == ref.nit
    np.testing.assert_array_equal(res.x, ref.x)
    np.testing.assert_array_equal(res.jac, rosen_der(res.x))


def _one_buffer_then_nan(gradient, n):
    """``gradient`` written into one reused buffer, which turns NaN from the fourth call."""
    buf = np.zeros(n)
    calls = [0]

    def buffered(x):
        calls[0] += 1
        buf[:] = gradient(x) if calls[0] < 4 else np.nan
        return buf

    return buffered


def test_minimize_jac_buffer_nan_does_not_leak_into_result():
    """A jac that returns one buffer and turns NaN at an accepted point: result.jac was the
    buffer, now NaN, though the result promises jac is never NaN."""
    res = tr.minimize(rosen, X0, jac=_one_buffer_then_nan(rosen_der, 2),
                      hessp=rosen_hess_prod)
    assert res.reason is Status.NON_FINITE
    assert np.isfinite(res.jac).all()
    np.testing.assert_array_equal(res.jac, rosen_der(res.x))


def test_minimize_callback_mutating_intermediate_result_x():
    """callback(intermediate_result=...) received the solver's own x: writing into it moved
    the iterate (the run ended at x = [5, 5] with fun reported for another point)."""
    ref = tr.minimize(rosen, X0, jac=rosen_der, hessp=rosen_hess_prod)

    def callback(intermediate_result):
        intermediate_result.x[:] = 5.0

    res = tr.minimize(rosen, X0, jac=rosen_der, hessp=rosen_hess_prod, callback=callback)
    assert res.success
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.fun == rosen(res.x)


@pytest.mark.parametrize("method", ["trust-ncg", "trust-krylov"])
def test_minimize_hessp_mutating_its_vector(method):
    """A hessp that scales its argument in place corrupted CG's direction (MAX_ITER at a
    wrong point instead of convergence)."""
    ref = tr.minimize(rosen, X0, jac=rosen_der, hessp=rosen_hess_prod, method=method)

    def hessp(x, p):
        out = rosen_hess_prod(x, p)
        p *= 7.0
        return out

    res = tr.minimize(rosen, X0, jac=rosen_der, hessp=hessp, method=method)
    assert res.success
    np.testing.assert_array_equal(res.x, ref.x)


def test_steihaug_hessp_mutating_its_vector():
    H = np.diag([2.0, 1.0, 3.0])
    g = np.ones(3)

    def hessp(v):
        out = H @ v
        v *= 5.0
        return out

    res = tr.steihaug_cg(hessp, g, 10.0, rtol=1e-12)
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.p, -g / np.diag(H))


@pytest.mark.parametrize("method", ["trust-exact", "dogleg"])
def test_minimize_dense_hess_as_np_matrix(method):
    """hess returning np.matrix: the dense methods failed with a NumPy matmul traceback."""

    def hess(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return np.matrix(rosen_hess(x))

    ref = tr.minimize(rosen, X0, jac=rosen_der, hess=rosen_hess, method=method)
    res = tr.minimize(rosen, X0, jac=rosen_der, hess=hess, method=method)
    assert res.success
    np.testing.assert_array_equal(res.x, ref.x)


def test_minimize_krylov_zero_gradient_with_gtol_zero():
    """gtol=0 and a gradient that is exactly zero (rosen at [1, 1]): trust-krylov raised
    ZeroDivisionError; it now ends as trust-ncg does there (status 2)."""
    for x0 in (np.ones(2), X0):
        res = tr.minimize(
            rosen, x0, jac=rosen_der, hessp=rosen_hess_prod, method="trust-krylov",
            options={"gtol": 0.0},
        )
        ncg = tr.minimize(
            rosen, x0, jac=rosen_der, hessp=rosen_hess_prod, method="trust-ncg",
            options={"gtol": 0.0},
        )
        assert res.reason is ncg.reason is Status.NO_PREDICTED_DECREASE
        np.testing.assert_allclose(res.x, 1.0)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_minimize_region_shrinking_to_nothing_at_origin(method):
    """At x = 0 every step changes x, so the region shrank until its radius underflowed:
    trust-ncg raised "radius must be > 0" (an argument the user never gave), trust-krylov
    and trust-exact ZeroDivisionError. A kink at the start (jac inconsistent with fun)."""
    H = 0.1 * np.eye(2)
    kw = {"hessp": lambda x, p: H @ p} if method in ("trust-ncg", "trust-krylov") else {
        "hess": lambda x: H
    }
    res = tr.minimize(
        lambda x: float(np.abs(x).sum()), np.zeros(2),
        jac=lambda x: np.where(x >= 0, 1.0, -1.0), method=method,
        options={"maxiter": 5000}, **kw,
    )
    assert res.reason is Status.STEP_TOO_SMALL
    np.testing.assert_array_equal(res.x, 0.0)
    assert res.nit < 100


@pytest.mark.parametrize("method", ALL_METHODS)
def test_minimize_nan_at_every_trial_point_around_origin(method):
    """fun NaN at every trial point around x0 = 0: MAX_ITER (ncg), a crash (krylov, exact)
    or "radius must be > 0"; the documented outcome is NON_FINITE."""
    H = np.array([[2.0, 0.3], [0.3, 1.0]])
    kw = {"hessp": lambda x, p: H @ p} if method in ("trust-ncg", "trust-krylov") else {
        "hess": lambda x: H
    }
    with np.errstate(invalid="ignore"):
        res = tr.minimize(
            lambda x: 0.0 if not x.any() else np.nan, np.zeros(2),
            jac=lambda x: np.array([1.0, 2.0]), method=method, **kw,
        )
    assert res.reason is Status.NON_FINITE
    np.testing.assert_array_equal(res.x, 0.0)
    assert res.fun == 0.0


def _categorical():
    counts = np.array([10.0, 30.0, 60.0])
    freq = counts / counts.sum()

    def probs(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def loglik(z):
        return float(freq @ np.log(probs(z)))

    def grad(z):
        return freq - probs(z)

    def kl(z_ref, z):
        return float(probs(z_ref) @ np.log(probs(z_ref) / probs(z)))

    def fisher(z_ref, u):
        p = probs(z_ref)
        return p * u - p * (p @ u)

    return loglik, grad, kl, fisher


def test_ascent_grad_buffer_nan_does_not_leak_into_result():
    """divergence_ascent kept the user's gradient buffer as g: a NaN at the next accepted
    point replaced the returned grad of the last good point."""
    loglik, grad, kl, fisher = _categorical()
    res = tr.divergence_ascent(loglik, _one_buffer_then_nan(grad, 3), kl, fisher, np.zeros(3),
                               0.1, gtol=1e-8)
    assert res.status is Status.NON_FINITE
    assert np.isfinite(res.grad).all() and np.isfinite(res.grad_norm)
    np.testing.assert_array_equal(res.grad, grad(res.x))


def test_ascent_metric_product_mutating_its_vector():
    loglik, grad, kl, fisher = _categorical()
    ref = tr.divergence_ascent(loglik, grad, kl, fisher, np.zeros(3), 0.1, gtol=1e-8)

    def metric(z_ref, u):
        out = fisher(z_ref, u)
        u *= 3.0
        return out

    res = tr.divergence_ascent(loglik, grad, kl, metric, np.zeros(3), 0.1, gtol=1e-8)
    assert res.success and res.nit == ref.nit
    np.testing.assert_array_equal(res.x, ref.x)
