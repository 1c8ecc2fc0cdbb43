"""trustregion.minimize against scipy.optimize.minimize(method="trust-ncg").

The problem set (18 problems, known minimizers, analytic derivatives) is in
``tests/solver_problems.py``; both solvers get the same options and a counting ``hessp``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import OptimizeResult, rosen, rosen_der, rosen_hess, rosen_hess_prod
from scipy.optimize import minimize as scipy_minimize
from scipy.sparse.linalg import aslinearoperator
from solver_problems import Problem, make_problems

import trustregion as tr
from trustregion import Status

PROBLEMS = make_problems()


class Counting:
    """A ``hessp`` that counts its calls."""

    def __init__(self, hessp):
        self.hessp = hessp
        self.calls = 0

    def __call__(self, x, p, *args):
        self.calls += 1
        return self.hessp(x, p, *args)


def run_scipy(P: Problem, method="trust-ncg", **options):
    hessp = Counting(P.hessp)
    res = scipy_minimize(
        P.fun, P.x0, method=method, jac=P.grad, hessp=hessp, options={**P.options, **options}
    )
    return res, hessp.calls


def run_ours(P: Problem, **options):
    return tr.minimize(P.fun, P.x0, jac=P.grad, hessp=P.hessp, options={**P.options, **options})


@pytest.fixture(scope="module")
def runs():
    """(ours, scipy result, scipy hessp calls) for every problem, computed once."""
    return {P.name: (run_ours(P), *run_scipy(P)) for P in PROBLEMS}


def test_the_set_is_large_enough():
    assert len(PROBLEMS) >= 15
    assert len({P.name for P in PROBLEMS}) == len(PROBLEMS)


@pytest.mark.parametrize("P", PROBLEMS, ids=lambda P: P.name)
def test_reaches_the_known_minimizer_and_scipy_s_point(P, runs):
    ours, ref, _ = runs[P.name]
    scale = np.maximum(1.0, np.abs(P.x_star))
    assert ours.success, ours.message
    assert ours.reason is Status.CONVERGED and ours.status == 0
    assert np.all(np.abs(ours.x - P.x_star) <= P.x_tol * scale)
    assert np.all(np.abs(ours.x - ref.x) <= P.x_tol * scale)
    assert ours.fun == pytest.approx(ref.fun, rel=1e-6, abs=1e-10)
    assert np.linalg.norm(ours.jac) < P.options.get("gtol", 1e-4)
    np.testing.assert_array_equal(ours.jac, P.grad(ours.x))
    assert ours.fun == P.fun(ours.x)
    # same outer iteration as scipy: iteration and evaluation counts agree closely
    assert abs(ours.nit - ref.nit) <= max(2, ref.nit // 10)
    assert abs(ours.nfev - ref.nfev) <= max(2, ref.nfev // 10)


def test_no_more_hessian_vector_products_than_scipy_on_most_problems(runs):
    ours_fewer_or_equal = [name for name, (o, _, n_ref) in runs.items() if o.nhev <= n_ref]
    assert len(ours_fewer_or_equal) > len(PROBLEMS) / 2, ours_fewer_or_equal
    total_ours = sum(o.nhev for o, _, _ in runs.values())
    total_scipy = sum(n for _, _, n in runs.values())
    assert total_ours < total_scipy
    for o, _, _ in runs.values():
        assert o.nhvp == o.nhev  # hessp mode: both count the products


def test_negative_curvature_reaches_the_boundary_without_extra_products():
    P = next(P for P in PROBLEMS if P.name.startswith("styblinski_tang"))
    # At x0 = 0 the Hessian is negative definite: the first CG direction has d^T H d < 0.
    assert np.all(np.linalg.eigvalsh(P.hess(P.x0)) < 0)
    ours = run_ours(P, maxiter=1)
    ref, n_ref = run_scipy(P, maxiter=1)
    np.testing.assert_allclose(ours.x, ref.x, rtol=1e-12)
    assert ours.nhev == 1
    assert n_ref == 4  # the product, two to compare the boundary points, one for m(p)


@pytest.mark.parametrize("P", PROBLEMS[:6], ids=lambda P: P.name)
def test_hess_matrix_gives_the_same_run_as_hessp(P):
    with_hessp = run_ours(P)
    with_hess = tr.minimize(P.fun, P.x0, jac=P.grad, hess=P.hess, options=P.options)
    np.testing.assert_allclose(with_hess.x, with_hessp.x, rtol=1e-8, atol=1e-10)
    assert with_hess.nit == with_hessp.nit
    assert with_hess.nhvp == with_hessp.nhvp
    # scipy's meaning of nhev with a Hessian: evaluations, once per point (+ the final one)
    assert with_hess.nhev <= with_hess.nit + 2
    np.testing.assert_array_equal(with_hess.hess, P.hess(with_hess.x))


def test_hess_may_return_sparse_or_linear_operator():
    P = PROBLEMS[0]
    dense = tr.minimize(P.fun, P.x0, jac=P.grad, hess=P.hess)
    for wrap in (sp.csr_matrix, aslinearoperator):
        res = tr.minimize(P.fun, P.x0, jac=P.grad, hess=lambda x, w=wrap: w(P.hess(x)))
        np.testing.assert_allclose(res.x, dense.x, rtol=1e-10)


def test_result_is_a_scipy_optimize_result_with_scipy_s_fields():
    res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod)
    assert isinstance(res, OptimizeResult)
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "nhev", "status", "success", "message"):
        assert key in res
    assert res.message == "Optimization terminated successfully."
    assert res.x.dtype == np.float64


def test_maxiter_status_and_message_match_scipy():
    ours = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                       options={"maxiter": 5})  # fmt: skip
    ref = scipy_minimize(rosen, [-1.2, 1.0], method="trust-ncg", jac=rosen_der,
                         hessp=rosen_hess_prod, options={"maxiter": 5})  # fmt: skip
    assert ours.status == ref.status == 1
    assert ours.message == ref.message
    assert ours.nit == ref.nit == 5
    np.testing.assert_array_equal(ours.x, ref.x)


def test_tol_sets_gtol_unless_given():
    res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod, tol=1e-10)
    assert np.linalg.norm(res.jac) < 1e-10
    loose = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod, tol=1e-10,
                        options={"gtol": 1e-2})  # fmt: skip
    assert 1e-10 < np.linalg.norm(loose.jac) < 1e-2


def test_jac_true_and_args():
    def fun_and_grad(x, a):
        return a * rosen(x), a * rosen_der(x)

    def hessp(x, p, a):
        return a * rosen_hess_prod(x, p)

    res = tr.minimize(fun_and_grad, [-1.2, 1.0], args=(2.0,), jac=True, hessp=hessp)
    ref = scipy_minimize(fun_and_grad, [-1.2, 1.0], args=(2.0,), jac=True, hessp=hessp,
                         method="trust-ncg")  # fmt: skip
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12)
    assert res.nit == ref.nit
    assert res.njev == res.nfev  # every evaluation brings its gradient


def test_user_functions_get_copies_of_x():
    seen = []

    def fun(x):
        seen.append(x)
        value = rosen(x)
        x[:] = np.nan  # vandalizing the argument must not affect the solver
        return value

    res = tr.minimize(fun, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod)
    assert res.success and np.allclose(res.x, 1.0, atol=1e-5)


class TestCallback:
    def test_called_each_iteration_with_a_copy_of_x(self):
        xs = []
        res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                          callback=xs.append)  # fmt: skip
        assert len(xs) == res.nit
        np.testing.assert_array_equal(xs[-1], res.x)
        assert len({id(x) for x in xs}) == len(xs)

    def test_intermediate_result_form(self):
        seen = []

        def callback(intermediate_result):
            seen.append(intermediate_result)

        res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                          callback=callback)  # fmt: skip
        assert len(seen) == res.nit
        assert seen[-1].fun == res.fun

    def test_stop_iteration_ends_the_run_with_status_99(self):
        def callback(xk):
            if len(calls) == 2:
                raise StopIteration
            calls.append(xk)

        calls = []
        res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                          callback=callback)  # fmt: skip
        assert res.reason is Status.CALLBACK_STOP and res.status == 99
        assert not res.success
        assert res.nit == 3


def test_return_all_and_disp(capsys):
    res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                      options={"return_all": True, "disp": True})  # fmt: skip
    assert len(res.allvecs) == res.nit + 1
    np.testing.assert_array_equal(res.allvecs[0], [-1.2, 1.0])
    assert "Optimization terminated successfully." in capsys.readouterr().out


def test_cg_maxiter_caps_every_subproblem():
    P = next(P for P in PROBLEMS if P.name == "quadratic_ill_30")
    res = run_ours(P, cg_maxiter=3, maxiter=40)
    assert res.nhev <= 3 * res.nit
    assert res.reason in (Status.CONVERGED, Status.MAX_ITER)
    assert np.all(np.isfinite(res.x))


def test_inner_cap_ends_subproblems_that_never_converge():
    # A non-symmetric "Hessian" with d^T H d = |d|^2 > 0: CG neither converges nor leaves a
    # large region. scipy's inner loop (no cap) is still running after 1e5 products on this
    # subproblem; ours stops every subproblem at cg_maxiter.
    H = np.array([[1.0, 10.0], [-10.0, 1.0]])
    res = tr.minimize(
        lambda x: float(x @ x),
        [1.0, 1.0],
        jac=lambda x: 2 * x,
        hessp=lambda x, p: H @ p,
        options={"initial_trust_radius": 100.0, "cg_maxiter": 6, "maxiter": 50},
    )
    # every subproblem, including the last (not counted in nit), made at most 6 products
    assert res.nhev <= 6 * (res.nit + 1)
    assert res.reason in (Status.NO_PREDICTED_DECREASE, Status.MAX_ITER)
    assert np.all(np.isfinite(res.x)) and res.fun <= 2.0


class TestNonFinite:
    """A NaN or inf ends the run with NON_FINITE and the last point with finite values."""

    @staticmethod
    def after(n_good, f):
        calls = [0]

        def wrapped(*a):
            calls[0] += 1
            out = np.asarray(f(*a), dtype=float)
            return out * np.nan if calls[0] > n_good else out

        return wrapped

    def reference_path(self):
        return tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                           options={"return_all": True})  # fmt: skip

    @pytest.mark.parametrize("which", ["fun", "jac", "hessp"])
    def test_last_good_point_is_returned(self, which):
        funcs = {"fun": rosen, "jac": rosen_der, "hessp": rosen_hess_prod}
        funcs[which] = self.after(6, funcs[which])
        res = tr.minimize(funcs["fun"], [-1.2, 1.0], jac=funcs["jac"], hessp=funcs["hessp"])
        assert res.reason is Status.NON_FINITE
        assert not res.success
        assert which in res.message
        assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
        assert np.all(np.isfinite(res.jac))
        assert res.x.tolist() in [x.tolist() for x in self.reference_path().allvecs]
        assert res.fun == rosen(res.x)

    def test_inf_objective_at_a_trial_point_is_a_rejected_step(self):
        # The domain x[0] < 0 cuts Rosenbrock's valley: trials across the cut are rejected
        # and the region shrinks, the run goes on inside the domain to its edge.
        res = tr.minimize(lambda x: rosen(x) if x[0] < 0 else np.inf, [-1.2, 1.0],
                          jac=rosen_der, hessp=rosen_hess_prod)  # fmt: skip
        assert res.x[0] < 0 and np.isfinite(res.fun)
        assert res.fun < rosen(np.array([-1.2, 1.0])) / 20
        assert res.x[0] > -1e-3  # it reached the edge of the domain
        assert res.reason in (Status.STEP_TOO_SMALL, Status.NON_FINITE)


def test_step_too_small_is_reported_when_the_gradient_is_wrong():
    # jac is not the gradient of fun: the model keeps predicting a decrease that f never
    # shows, so the region shrinks until x + p == x.
    def fun(x):
        return float((x[0] - 1.0) ** 2)

    def jac(x):
        return np.exp(x)

    def hessp(x, p):
        return 2.0 * p

    ours = tr.minimize(fun, [3.0], jac=jac, hessp=hessp)
    ref = scipy_minimize(fun, [3.0], jac=jac, hessp=hessp, method="trust-ncg")
    assert ours.reason is Status.STEP_TOO_SMALL
    assert "inconsistent" in ours.message
    assert ref.status == 2  # scipy stops when its predicted reduction rounds to zero
    np.testing.assert_array_equal(ours.x, ref.x)
    assert ours.nhev < ref.nhev


class TestPreconditioned:
    def test_exact_diagonal_preconditioner_solves_a_badly_scaled_quadratic_at_once(self):
        P = next(P for P in PROBLEMS if P.name == "quadratic_diag_scaled_20")
        diag = np.diag(P.hess(P.x0))
        plain = run_ours(P)
        pre = run_ours(P, preconditioner=np.diag(1.0 / diag), initial_trust_radius=100.0,
                       max_trust_radius=1e4)  # fmt: skip
        assert pre.success
        np.testing.assert_allclose(pre.x, P.x_star, rtol=1e-10)
        assert pre.nit <= 2 and pre.nhev <= 2
        assert plain.nhev > 20 * pre.nhev

    def test_callable_jacobi_preconditioner_on_scaled_rosenbrock(self):
        P = next(P for P in PROBLEMS if P.name == "rosenbrock_scaled_2")

        def jacobi(x, v):
            return v / np.maximum(np.abs(np.diag(P.hess(x))), 1e-12)

        plain = run_ours(P)
        pre = run_ours(P, preconditioner=jacobi)
        assert pre.success
        assert np.allclose(pre.x, P.x_star, rtol=1e-4)
        assert pre.nhev < plain.nhev

    def test_identity_preconditioner_follows_the_plain_method(self):
        P = PROBLEMS[0]
        plain = run_ours(P)
        pre = run_ours(P, preconditioner=np.eye(P.n))
        np.testing.assert_allclose(pre.x, plain.x, rtol=1e-8)
        assert pre.nit == plain.nit

    def test_indefinite_preconditioner_is_a_status(self):
        res = tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                          options={"preconditioner": -np.eye(2)})  # fmt: skip
        assert res.reason is Status.INDEFINITE_PRECONDITIONER
        np.testing.assert_array_equal(res.x, [-1.2, 1.0])

    def test_wrong_shape_preconditioner_raises(self):
        with pytest.raises(ValueError, match="preconditioner must have shape"):
            tr.minimize(rosen, [-1.2, 1.0], jac=rosen_der, hessp=rosen_hess_prod,
                        options={"preconditioner": np.eye(3)})  # fmt: skip


def _quad(x):
    return float(x @ x)


def _quad_grad(x):
    return 2 * x


def _quad_hessp(x, p):
    return 2 * p


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fun": lambda x: np.nan}, ValueError, r"fun\(x0\) must be finite"),
        ({"fun": lambda x: x}, ValueError, "scalar"),
        ({"jac": lambda x: np.array([np.inf, 0.0])}, ValueError, r"jac\(x0\) must be finite"),
        ({"jac": lambda x: np.zeros(3)}, ValueError, "jac returned shape"),
        ({"jac": None}, TypeError, "jac"),
        ({"hessp": lambda x, p: np.zeros(3)}, ValueError, "hessp returned shape"),
        ({"hessp": None}, ValueError, "hess or hessp"),
        ({"hess": lambda x: np.eye(2)}, ValueError, "not both"),
        ({"hessp": None, "hess": lambda x: np.eye(3)}, ValueError, "hess must have shape"),
        ({"hessp": None, "hess": "2-point"}, TypeError, "hess must be callable"),
        ({"method": "bfgs"}, ValueError, "method"),
        ({"x0": [np.nan, 1.0]}, ValueError, "x0"),
        ({"options": {"eta": 0.3}}, ValueError, "eta"),
        ({"options": {"initial_trust_radius": 2e3}}, ValueError, "initial_trust_radius"),
        ({"options": {"max_trust_radius": -1.0}}, ValueError, "max_trust_radius"),
        ({"options": {"gtol": -1.0}}, ValueError, "gtol"),
        ({"options": {"maxiter": 0}}, ValueError, "maxiter"),
        ({"options": {"cg_maxiter": 1.5}}, TypeError, "cg_maxiter"),
        ({"options": {"inexact": True}}, ValueError, "unknown option"),
        ({"callback": 3}, TypeError, "callback"),
    ],
)
def test_misuse_raises_naming_the_argument(kwargs, error, match):
    call = {"fun": _quad, "x0": [1.0, 2.0], "jac": _quad_grad, "hessp": _quad_hessp, **kwargs}
    with pytest.raises(error, match=match):
        tr.minimize(call.pop("fun"), call.pop("x0"), **call)


@settings(max_examples=20)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), log_cond=st.floats(0, 5))
def test_convex_quadratics_match_linear_solve_and_scipy(n, seed, log_cond):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, log_cond, n)) @ Q.T
    b = rng.standard_normal(n)
    x_star = np.linalg.solve(A, b)

    # f written around its minimizer, so that its value, not only its gradient, resolves
    # the last digits (0.5 x^T A x - b^T x loses them to cancellation near x*)
    def fun(x):
        return 0.5 * (x - x_star) @ A @ (x - x_star)

    def jac(x):
        return A @ x - b

    def hessp(x, p):
        return A @ p

    counted = Counting(hessp)
    ours = tr.minimize(fun, np.zeros(n), jac=jac, hessp=hessp, tol=1e-6)
    ref = scipy_minimize(fun, np.zeros(n), method="trust-ncg", jac=jac, hessp=counted, tol=1e-6)
    assert ours.success, ours.message
    # the smallest eigenvalue is 1, so |x - x*| <= |A x - b| < gtol
    np.testing.assert_allclose(ours.x, x_star, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=2e-6)
    assert ours.nhev <= counted.calls


def test_hessian_scipy_helpers_agree_with_dense():
    # guard for the problem set: scipy's rosen_hess_prod is the product with rosen_hess
    x, p = np.array([0.3, -0.7, 1.1]), np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(rosen_hess_prod(x, p), rosen_hess(x) @ p)
