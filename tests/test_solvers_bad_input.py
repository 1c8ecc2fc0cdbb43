"""Issue 9 for the solvers: non-finite trial values (cause 3) and complex operator output
(cause 2) in ``minimize`` and ``divergence_ascent``.

- A non-finite ``fun`` at a trial point (outside the function's domain) is a rejected step:
  the region shrinks and the run goes on, as scipy does for ``+inf`` (scipy repeats a NaN
  trial without shrinking until ``maxiter``). Only a non-finite value at ``x0`` or at an
  accepted point ends the run.
- A user function that returns complex values raises a ``TypeError`` naming the argument
  as the user passed it, instead of being cast to real with numpy's ``ComplexWarning``.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

import trustregion as tr
from trustregion import Status

METHODS = ("trust-ncg", "trust-krylov", "trust-exact", "dogleg")
DENSE = ("trust-exact", "dogleg")

# --- cause 3: a non-finite trial value is a rejected step -----------------------------------


def x_minus_log(nonfinite):
    """f = sum(x - log x), minimizer x = 1, undefined for x <= 0 (returns ``nonfinite``)."""

    def fun(x):
        if np.any(x <= 0):
            return nonfinite
        return float(np.sum(x - np.log(x)))

    return fun, (lambda x: 1.0 - 1.0 / x), (lambda x: np.diag(1.0 / x**2))


def derivative_kwargs(method, hess):
    if method in DENSE:
        return {"hess": hess}
    return {"hessp": lambda x, p: hess(x) @ p}


@pytest.mark.parametrize("nonfinite", [np.inf, np.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("method", METHODS)
def test_x_minus_log_x_from_3_reaches_1(method, nonfinite):
    # the example: the second step of trust-ncg lands on x = 0 (f = inf); the run
    # used to stop at x = 2
    fun, jac, hess = x_minus_log(nonfinite)
    res = tr.minimize(fun, [3.0], jac=jac, method=method, **derivative_kwargs(method, hess))
    assert res.success, res.message
    assert res.reason is Status.CONVERGED
    np.testing.assert_allclose(res.x, [1.0], atol=1e-4)


def test_scipy_repeats_a_nan_trial_where_ours_shrinks():
    fun, jac, hess = x_minus_log(np.nan)
    hessp = derivative_kwargs("trust-ncg", hess)["hessp"]
    ours = tr.minimize(fun, [3.0], jac=jac, hessp=hessp)
    ref = scipy_minimize(fun, [3.0], jac=jac, hessp=hessp, method="trust-ncg",
                         options={"maxiter": 50})  # fmt: skip
    assert ours.success and not ref.success and ref.status == 1
    # with +inf scipy shrinks too, and both reach x = 1 with the same number of evaluations
    fun_inf, _, _ = x_minus_log(np.inf)
    ours = tr.minimize(fun_inf, [3.0], jac=jac, hessp=hessp)
    ref = scipy_minimize(fun_inf, [3.0], jac=jac, hessp=hessp, method="trust-ncg")
    np.testing.assert_allclose(ours.x, ref.x, rtol=1e-10)
    assert ours.nfev == ref.nfev


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    nonfinite=st.sampled_from([np.inf, np.nan, -np.inf]),
    radius=st.floats(0.5, 50.0),
)
def test_domain_edge_family(method, n, seed, nonfinite, radius):
    # f = sum(x - a log x), minimizer x = a, starts far to the right so that the first
    # steps overshoot into x <= 0 for every radius
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.2, 3.0, n)
    x0 = a * rng.uniform(3.0, 20.0, n)

    def fun(x):
        return nonfinite if np.any(x <= 0) else float(np.sum(x - a * np.log(x)))

    def hess(x):
        return np.diag(a / x**2)

    res = tr.minimize(fun, x0, jac=lambda x: 1.0 - a / x, method=method,
                      options={"initial_trust_radius": radius, "max_trust_radius": 1e3},
                      **derivative_kwargs(method, hess))  # fmt: skip
    assert res.success, res.message
    np.testing.assert_allclose(res.x, a, rtol=1e-3)
    assert np.isfinite(res.fun)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_everywhere_but_x0_ends_with_non_finite(method):
    # every trial is outside the domain: the region shrinks until the step no longer moves x
    def fun(x):
        return 1.0 if np.array_equal(x, [2.0, 2.0]) else np.nan

    kwargs = {"hess": lambda x: np.eye(2)} if method in DENSE else {"hessp": lambda x, p: p}
    res = tr.minimize(fun, [2.0, 2.0], jac=lambda x: x, method=method, **kwargs)
    assert res.reason is Status.NON_FINITE and res.status == 4
    assert "fun" in res.message and "every trial point" in res.message
    np.testing.assert_array_equal(res.x, [2.0, 2.0])
    assert res.fun == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_at_x0_raises(method):
    kwargs = {"hess": rosen_hess} if method in DENSE else {"hessp": rosen_hess_prod}
    with pytest.raises(ValueError, match=r"fun\(x0\) must be finite"):
        tr.minimize(lambda x: np.inf, [1.0, 2.0], jac=rosen_der, method=method, **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_gradient_at_an_accepted_point_ends_the_run(method):
    calls = [0]

    def jac(x):
        calls[0] += 1
        return rosen_der(x) * (np.nan if calls[0] > 4 else 1.0)

    kwargs = {"hess": rosen_hess} if method in DENSE else {"hessp": rosen_hess_prod}
    res = tr.minimize(rosen, [-1.2, 1.0], jac=jac, method=method, **kwargs)
    assert res.reason is Status.NON_FINITE and "jac" in res.message
    assert np.all(np.isfinite(res.jac)) and res.fun == rosen(res.x)


# --- cause 2: complex output is rejected, naming the argument -------------------------------


def complex_of(f, dtype=np.complex128):
    return lambda *a: np.asarray(f(*a)).astype(dtype)


def call_minimize(method="trust-ncg", **overrides):
    kwargs = {"jac": rosen_der}
    kwargs.update({"hess": rosen_hess} if method in DENSE else {"hessp": rosen_hess_prod})
    kwargs.update(overrides)
    fun = kwargs.pop("fun", rosen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning may escape either
        return tr.minimize(fun, [-1.2, 1.0], method=method, **kwargs)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize(
    ("method", "argument", "override"),
    [
        ("trust-ncg", "hessp", lambda d: {"hessp": complex_of(rosen_hess_prod, d)}),
        ("trust-krylov", "hessp", lambda d: {"hessp": complex_of(rosen_hess_prod, d)}),
        ("trust-ncg", "hess", lambda d: {"hess": complex_of(rosen_hess, d), "hessp": None}),
        ("trust-krylov", "hess", lambda d: {"hess": complex_of(rosen_hess, d), "hessp": None}),
        ("trust-exact", "hess", lambda d: {"hess": complex_of(rosen_hess, d)}),
        ("dogleg", "hess", lambda d: {"hess": complex_of(rosen_hess, d)}),
        ("trust-ncg", "hess",
         lambda d: {"hess": lambda x: sp.csr_matrix(rosen_hess(x).astype(d)), "hessp": None}),
        ("trust-exact", "jac", lambda d: {"jac": complex_of(rosen_der, d)}),
        ("trust-ncg", "jac", lambda d: {"jac": complex_of(rosen_der, d)}),
        ("trust-ncg", "fun", lambda d: {"fun": lambda x: complex(rosen(x))}),
        ("trust-ncg", "preconditioner",
         lambda d: {"options": {"preconditioner": lambda x, v: v.astype(d)}}),
        ("trust-ncg", "preconditioner",
         lambda d: {"options": {"preconditioner": np.eye(2, dtype=d)}}),
    ],
)  # fmt: skip
def test_minimize_rejects_complex_output_naming_the_argument(method, argument, override, dtype):
    with pytest.raises(TypeError, match=rf"^{argument}\b.*(complex|real)"):
        call_minimize(method, **override(dtype))


def test_complex_gradient_through_fun_with_jac_true_names_fun():
    with pytest.raises(TypeError, match=r"fun's gradient.*complex"):
        call_minimize(fun=lambda x: (rosen(x), rosen_der(x).astype(complex)), jac=True)


def test_complex_with_zero_imaginary_part_is_still_rejected():
    # the dtype is the contract: a cast would hide a bug that happens to be real here
    with pytest.raises(TypeError, match="hessp returned complex"):
        call_minimize(hessp=lambda x, p: rosen_hess_prod(x, p) + 0j)


def ascent_problem():
    counts = np.array([10.0, 30.0, 60.0])
    freq = counts / counts.sum()

    def probs(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    return {
        "fun": lambda z: float(freq @ np.log(probs(z))),
        "grad": lambda z: freq - probs(z),
        "divergence": lambda z0, z: float(probs(z0) @ np.log(probs(z0) / probs(z))),
        "metric_product": lambda z0, u: probs(z0) * u - probs(z0) * (probs(z0) @ u),
    }


@pytest.mark.parametrize("argument", ["fun", "grad", "divergence", "metric_product"])
def test_divergence_ascent_rejects_complex_output_naming_the_argument(argument):
    functions = ascent_problem()
    real = functions[argument]
    if argument in ("fun", "divergence"):
        functions[argument] = lambda *a: complex(real(*a))
    else:
        functions[argument] = complex_of(real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=rf"^{argument}\b.*(complex|real)"):
            tr.divergence_ascent(x0=np.zeros(3), delta=0.1, **functions)


@pytest.mark.parametrize(
    ("argument", "bad", "match"),
    [
        ("grad", lambda z: np.zeros(4), "grad returned shape"),
        ("metric_product", lambda z0, u: np.zeros(4), "metric_product returned shape"),
        ("fun", lambda z: np.zeros(2), "fun must return a scalar"),
        ("divergence", lambda z0, z: "far", "divergence must return a real number"),
    ],
)
def test_divergence_ascent_shape_and_type_errors_name_the_argument(argument, bad, match):
    functions = {**ascent_problem(), argument: bad}
    with pytest.raises((ValueError, TypeError), match=match):
        tr.divergence_ascent(x0=np.zeros(3), delta=0.1, **functions)
