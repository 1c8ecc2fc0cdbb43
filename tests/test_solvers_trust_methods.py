"""trustregion.minimize's trust-krylov, trust-exact and dogleg against scipy's same-named methods,
and their subproblem solvers against closed forms (the hard case included).

The problem set is ``tests/solver_problems.py``; every run gets the same options and a
counting Hessian (``hessp`` for trust-krylov, ``hess`` for the dense methods).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod
from scipy.sparse.linalg import aslinearoperator
from solver_problems import make_problems

import trustregion as tr
from trustregion import Status
from trustregion.solvers._subproblems.exact import ExactModel
from trustregion.solvers._subproblems.krylov import KrylovModel
from trustregion.solvers._subproblems.tridiagonal import tridiagonal_subproblem

PROBLEMS = make_problems()
METHODS = ("trust-krylov", "trust-exact", "dogleg")
DENSE = ("trust-exact", "dogleg")


class Counting:
    def __init__(self, f):
        self.f = f
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.f(*args)


def run(P, method, solver, **options):
    hessian = Counting(P.hess if method in DENSE else P.hessp)
    kwargs = {"hess" if method in DENSE else "hessp": hessian}
    minimize = tr.minimize if solver == "ours" else scipy_minimize
    res = minimize(P.fun, P.x0, method=method, jac=P.grad, options={**P.options, **options},
                   **kwargs)  # fmt: skip
    return res, hessian.calls


@pytest.fixture(scope="module")
def runs():
    """(ours, our Hessian calls, scipy, scipy's Hessian calls) per (method, problem)."""
    return {
        (m, P.name): (*run(P, m, "ours"), *run(P, m, "scipy")) for m in METHODS for P in PROBLEMS
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("P", PROBLEMS, ids=lambda P: P.name)
def test_same_outcome_and_minimizer_as_scipy_with_no_more_evaluations(method, P, runs):
    ours, n_ours, ref, n_ref = runs[method, P.name]
    assert ours.status == ref.status, (ours.message, ref.message)
    if ref.success:
        assert ours.success
        scale = np.maximum(1.0, np.abs(P.x_star))
        error = np.max(np.abs(ours.x - P.x_star) / scale)
        error_ref = np.max(np.abs(ref.x - P.x_star) / scale)
        # the known minimizer, as closely as scipy reaches it (gtol bounds |g|, not |x - x*|)
        assert error <= max(P.x_tol, 2.0 * error_ref)
        # the same point as scipy's, or a point closer to the minimizer
        assert np.max(np.abs(ours.x - ref.x) / scale) <= P.x_tol or error < error_ref
        assert np.linalg.norm(ours.jac) < P.options.get("gtol", 1e-4)
    else:
        np.testing.assert_array_equal(ours.x, ref.x)  # dogleg: both stop at x0
        assert ours.message == ref.message
    assert ours.nfev <= ref.nfev
    assert ours.njev <= ref.njev
    assert n_ours <= n_ref
    assert ours.nhev == n_ours


@pytest.mark.parametrize("method", DENSE)
def test_dense_methods_take_scipy_s_steps(method, runs):
    # the same subproblem decisions as scipy: identical iterates on almost every problem
    same = [name for (m, name), (o, _, r, _) in runs.items() if m == method and o.nit == r.nit]
    assert len(same) >= len(PROBLEMS) - 1


def test_trust_krylov_needs_fewer_products_than_scipy_in_total(runs):
    ours = sum(n for (m, _), (_, n, _, _) in runs.items() if m == "trust-krylov")
    ref = sum(n for (m, _), (_, _, _, n) in runs.items() if m == "trust-krylov")
    assert ours < 0.8 * ref


@pytest.mark.parametrize("method", ["trust-ncg", *METHODS])
@pytest.mark.parametrize(
    "x0", [[1.3, 0.7, 0.8, 1.9, 1.2], [-1.2, 1.0], np.full(10, -1.0)], ids=["5d", "2d", "10d"]
)
def test_scipy_s_rosenbrock_examples(method, x0):
    runs = {}
    for solver, minimize in (("ours", tr.minimize), ("scipy", scipy_minimize)):
        hessian = Counting(rosen_hess if method in DENSE else rosen_hess_prod)
        kwargs = {"hess" if method in DENSE else "hessp": hessian}
        runs[solver] = minimize(rosen, x0, method=method, jac=rosen_der, **kwargs), hessian.calls
    (ours, n_ours), (ref, n_ref) = runs["ours"], runs["scipy"]
    assert ours.status == ref.status
    if ref.success:
        # gtol = 1e-4 on |g| leaves |x - x*| up to ~1e-4 on Rosenbrock's valley
        np.testing.assert_allclose(ours.x, ref.x, atol=1e-4)
        np.testing.assert_allclose(ours.x, 1.0, atol=5e-4)
    assert ours.nfev <= ref.nfev and ours.njev <= ref.njev
    assert n_ours <= n_ref  # calls counted here: scipy's nhev misses one with hess


def test_hess_matrix_with_trust_krylov_counts_evaluations():
    hessian = Counting(rosen_hess)
    ours = tr.minimize(rosen, [-1.2, 1.0], method="trust-krylov", jac=rosen_der, hess=hessian)
    n_ours, hessian.calls = hessian.calls, 0
    ref = scipy_minimize(rosen, [-1.2, 1.0], method="trust-krylov", jac=rosen_der,
                         hess=hessian)  # fmt: skip
    np.testing.assert_allclose(ours.x, ref.x, atol=1e-6)
    assert ours.nhev == n_ours <= hessian.calls
    assert ours.nhvp >= ours.nhev  # several products per evaluated matrix
    np.testing.assert_array_equal(ours.hess, rosen_hess(ours.x))


@pytest.mark.parametrize("wrap", [sp.csr_matrix, np.asarray], ids=["sparse", "dense"])
def test_trust_exact_accepts_sparse_hessians(wrap):
    ours = tr.minimize(rosen, [-1.2, 1.0], method="trust-exact", jac=rosen_der,
                       hess=lambda x: wrap(rosen_hess(x)))  # fmt: skip
    assert ours.success and np.allclose(ours.x, 1.0, atol=1e-6)


def test_inexact_false_matches_scipy():
    P = next(P for P in PROBLEMS if P.name == "rosenbrock_20")
    ours, _ = run(P, "trust-krylov", "ours", inexact=False)
    ref, _ = run(P, "trust-krylov", "scipy", inexact=False)
    assert ours.success
    np.testing.assert_allclose(ours.x, ref.x, atol=1e-6)
    assert ours.nfev <= ref.nfev


# --- dogleg on an indefinite Hessian, misuse --------------------------------------------


def test_dogleg_on_an_indefinite_hessian_is_scipy_s_status_3():
    P = next(P for P in PROBLEMS if P.name == "himmelblau")
    assert np.min(np.linalg.eigvalsh(P.hess(P.x0))) < 0
    ours = tr.minimize(P.fun, P.x0, method="dogleg", jac=P.grad, hess=P.hess)
    ref = scipy_minimize(P.fun, P.x0, method="dogleg", jac=P.grad, hess=P.hess)
    assert ours.status == ref.status == 3
    assert ours.reason is Status.NEGATIVE_CURVATURE
    assert ours.message == ref.message == "A linalg error occurred, such as a non-psd Hessian."
    assert not ours.success
    np.testing.assert_array_equal(ours.x, P.x0)
    # trust-exact handles the same start
    assert tr.minimize(P.fun, P.x0, method="trust-exact", jac=P.grad, hess=P.hess).success


@pytest.mark.parametrize("method", DENSE)
def test_dense_methods_need_hess(method):
    with pytest.raises(ValueError, match=f"method '{method}' needs hess.*'trust-ncg'"):
        tr.minimize(rosen, [1.0, 2.0], method=method, jac=rosen_der, hessp=rosen_hess_prod)
    with pytest.raises(ValueError, match=r"needs hess.*neither"):
        tr.minimize(rosen, [1.0, 2.0], method=method, jac=rosen_der)
    with pytest.raises(TypeError, match=r"hess must return an ndarray or a scipy\.sparse"):
        tr.minimize(rosen, [1.0, 2.0], method=method, jac=rosen_der,
                    hess=lambda x: aslinearoperator(rosen_hess(x)))  # fmt: skip


@pytest.mark.parametrize("method", ["BFGS", "trust-constr", "newton-cg", "", None, 3])
def test_unknown_method_lists_the_supported_ones(method):
    with pytest.raises(
        ValueError, match="supports 'trust-ncg', 'trust-krylov', 'trust-exact', 'dogleg'"
    ):
        tr.minimize(rosen, [1.0, 2.0], method=method, jac=rosen_der, hess=rosen_hess)


def test_method_names_are_case_insensitive():
    res = tr.minimize(rosen, [-1.2, 1.0], method="Trust-Exact", jac=rosen_der, hess=rosen_hess)
    assert res.success


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("trust-exact", {"inexact": False}, ValueError, "unknown option.*'trust-exact'"),
        ("dogleg", {"subproblem_maxiter": 3}, ValueError, "unknown option.*'dogleg'"),
        ("trust-krylov", {"cg_maxiter": 3}, ValueError, "unknown option.*'trust-krylov'"),
        ("trust-ncg", {"inexact": True}, ValueError, "unknown option.*'trust-ncg'"),
        ("trust-exact", {"subproblem_maxiter": 0}, ValueError, "subproblem_maxiter"),
        ("trust-exact", {"subproblem_maxiter": 2.5}, TypeError, "subproblem_maxiter"),
        ("trust-krylov", {"inexact": "yes"}, TypeError, "inexact"),
        ("dogleg", {"eta": 0.5}, ValueError, "eta"),
        ("trust-krylov", {"initial_trust_radius": 0.0}, ValueError, "initial_trust_radius"),
        ("trust-exact", [("gtol", 1e-3)], TypeError, "options must be a dict"),
    ],
)
def test_options_are_validated_per_method(method, options, error, match):
    with pytest.raises(error, match=match):
        tr.minimize(rosen, [1.0, 2.0], method=method, jac=rosen_der, hess=rosen_hess,
                    options=options)  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_hessian_at_an_accepted_point_ends_the_run(method):
    calls = [0]

    def hess(x):
        calls[0] += 1
        return rosen_hess(x) * (np.nan if calls[0] > 3 else 1.0)

    res = tr.minimize(rosen, [-1.2, 1.0], method=method, jac=rosen_der, hess=hess)
    assert res.reason is Status.NON_FINITE and res.status == 4
    assert "hess" in res.message
    assert np.all(np.isfinite(res.x)) and res.fun == rosen(res.x)


@pytest.mark.parametrize("method", METHODS)
def test_return_all_callback_and_maxiter(method):
    xs = []
    kwargs = {"hess": rosen_hess} if method in DENSE else {"hessp": rosen_hess_prod}
    res = tr.minimize(rosen, [-1.2, 1.0], method=method, jac=rosen_der, callback=xs.append,
                      options={"maxiter": 4, "return_all": True}, **kwargs)  # fmt: skip
    ref = scipy_minimize(rosen, [-1.2, 1.0], method=method, jac=rosen_der,
                         options={"maxiter": 4}, **kwargs)  # fmt: skip
    assert res.status == ref.status == 1 and res.message == ref.message
    assert res.nit == len(xs) == 4 and len(res.allvecs) == 5
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)


# --- the subproblems against closed forms -------------------------------------------------


def closed_form_trust_region(H, g, radius):
    """Global minimizer of g^T p + p^T H p / 2 on ||p|| <= radius from the eigensystem of H,
    with the hard case (Nocedal & Wright, section 4.3); returns (p, model value)."""
    lam, V = np.linalg.eigh(H)
    c = V.T @ g

    def p_of(mu):
        return -V @ (c / (lam + mu))

    def model(p):
        return float(g @ p + 0.5 * p @ H @ p)

    if lam[0] > 0 and np.linalg.norm(p_of(0.0)) <= radius:
        p = p_of(0.0)
        return p, model(p)
    low = max(0.0, -lam[0])
    on_top = np.abs(lam - lam[0]) <= 1e-12 * max(1.0, abs(lam[0]))
    if np.all(np.abs(c[on_top]) <= 1e-12 * np.linalg.norm(g)):
        keep = ~on_top
        p_hat = -V[:, keep] @ (c[keep] / (lam[keep] + low))
        if np.linalg.norm(p_hat) <= radius:  # the hard case
            tau = np.sqrt(radius**2 - p_hat @ p_hat)
            p = p_hat + tau * V[:, 0]
            return p, model(p)
    hi = low + np.linalg.norm(g) / radius + 1.0
    while np.linalg.norm(p_of(hi)) > radius:
        hi *= 2
    lo = low + 1e-15 * max(1.0, low)
    for _ in range(200):  # bisection on ||p(mu)|| = radius
        mid = 0.5 * (lo + hi)
        if np.linalg.norm(p_of(mid)) > radius:
            lo = mid
        else:
            hi = mid
    p = p_of(hi)
    return p, model(p)


def hard_case(n, seed, radius_factor, support=None):
    """An indefinite H whose smallest eigenvector v1 is orthogonal to g, radius in the hard
    case. ``support``: how many other eigenvectors g combines (all by default)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigenvalues = np.concatenate([[-2.0], rng.uniform(0.5, 5.0, n - 1)])
    H = (Q * eigenvalues) @ Q.T
    H = 0.5 * (H + H.T)
    coefficients = np.concatenate([[0.0], rng.uniform(0.5, 2.0, n - 1)])
    if support is not None:
        coefficients[1 + support :] = 0.0
    g = Q @ coefficients
    p_hat = -Q[:, 1:] @ (coefficients[1:] / (eigenvalues[1:] + 2.0))
    return H, g, radius_factor * np.linalg.norm(p_hat), Q[:, 0]


def model_value(H, g, p):
    return float(g @ p + 0.5 * p @ H @ p)


@pytest.mark.parametrize("rotated", [False, True], ids=["diagonal", "rotated"])
def test_hard_case_exact_and_krylov_against_the_closed_form(rotated):
    # H = diag(-2, 1, 3) (or rotated), g orthogonal to the eigenvector of -2
    H = np.diag([-2.0, 1.0, 3.0])
    g = np.array([0.0, 1.0, 1.0])
    v1 = np.array([1.0, 0.0, 0.0])
    if rotated:
        Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
        H, g, v1 = Q @ H @ Q.T, Q @ g, Q @ v1
    radius = 1.0  # ||(H + 2 I)^+ g|| = sqrt(1/9 + 1/25) = 0.39 < 1: the hard case
    # closed form: p = p_hat + tau v1, p_hat = -(H + 2 I)^+ g, |p| = radius, either sign
    p_hat = -np.linalg.pinv(H + 2.0 * np.eye(3)) @ g
    tau = np.sqrt(radius**2 - p_hat @ p_hat)
    m_star = model_value(H, g, p_hat + tau * v1)
    exact = ExactModel(H, g, k_easy=1e-12, k_hard=1e-12, maxiter=100).solve(radius)
    krylov = KrylovModel(H.dot, g, inexact=False).solve(radius)
    for step in (exact, krylov):
        assert step.hits_boundary
        distance = min(np.linalg.norm(step.p - p_hat - s * tau * v1) for s in (1.0, -1.0))
        assert distance < 1e-6
        assert model_value(H, g, step.p) == pytest.approx(m_star, rel=1e-10)
        assert -step.predicted_reduction == pytest.approx(m_star, rel=1e-10)


@settings(max_examples=25)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**32 - 1), factor=st.floats(1.1, 5.0))
def test_hard_case_family_trust_exact(n, seed, factor):
    H, g, radius, v1 = hard_case(n, seed, factor)
    _, m_star = closed_form_trust_region(H, g, radius)
    step = ExactModel(H, g, k_easy=1e-10, k_hard=1e-10, maxiter=200).solve(radius)
    assert np.linalg.norm(step.p) == pytest.approx(radius, rel=1e-6)
    assert model_value(H, g, step.p) == pytest.approx(m_star, rel=1e-6, abs=1e-10)
    assert abs(step.p @ v1) > 0.1 * radius / factor  # it moved along the eigenvector


@settings(max_examples=25)
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    factor=st.floats(1.1, 5.0),
    support=st.integers(1, 3),
)
def test_hard_case_family_trust_krylov(n, seed, factor, support):
    # The Krylov space of g is invariant (g combines `support` < n eigenvectors, none of
    # them v1): the Lanczos process breaks down before it can see v1 and the probe block
    # must find it. (When the subproblem converges in the Krylov space before it breaks
    # down, the answer is the minimizer in that space, as for every Krylov method.)
    support = min(support, n - 1)
    H, g, radius, v1 = hard_case(n, seed, factor, support)
    _, m_star = closed_form_trust_region(H, g, radius)
    step = KrylovModel(H.dot, g, inexact=False).solve(radius)
    assert np.linalg.norm(step.p) == pytest.approx(radius, rel=1e-6)
    assert model_value(H, g, step.p) == pytest.approx(m_star, rel=1e-6, abs=1e-10)
    assert abs(step.p @ v1) > 0.1 * radius / factor


def test_default_tolerances_of_trust_exact_stay_within_scipy_s_bound_in_the_hard_case():
    # Moré-Sorensen with kappa_hard = 0.2: m(p) <= (1 - kappa_hard)^2-ish of the optimum;
    # check the documented guarantee m(p) <= m* (1 - kappa_hard (2 - kappa_hard)) ... as
    # a plain bound: within 40% of the optimal decrease, on the boundary.
    H, g, radius, _ = hard_case(6, 3, 2.0)
    _, m_star = closed_form_trust_region(H, g, radius)
    step = ExactModel(H, g).solve(radius)
    assert model_value(H, g, step.p) <= 0.6 * m_star
    assert np.linalg.norm(step.p) <= radius * (1 + 1e-12)


@settings(max_examples=40)
@given(
    n=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-3.0, 3.0),
    log_radius=st.floats(-2.0, 2.0),
)
def test_subproblem_solvers_match_the_closed_form(n, seed, shift, log_radius):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    H = 0.5 * (A + A.T) + shift * np.eye(n)
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    _, m_star = closed_form_trust_region(H, g, radius)
    exact = ExactModel(H, g, k_easy=1e-10, k_hard=1e-10, maxiter=200).solve(radius)
    krylov = KrylovModel(H.dot, g, inexact=False).solve(radius)
    for step in (exact, krylov):
        assert np.linalg.norm(step.p) <= radius * (1 + 1e-8)
        assert model_value(H, g, step.p) <= m_star + 1e-6 * max(1.0, abs(m_star))
        assert -step.predicted_reduction == pytest.approx(
            model_value(H, g, step.p), rel=1e-6, abs=1e-9
        )


@settings(max_examples=40)
@given(
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-2.0, 2.0),
    log_radius=st.floats(-2.0, 2.0),
    split=st.integers(0, 12),
)
def test_tridiagonal_subproblem_against_the_closed_form(k, seed, shift, log_radius, split):
    rng = np.random.default_rng(seed)
    diag = rng.standard_normal(k) + shift
    off = rng.uniform(0.1, 1.0, k - 1)
    if 0 < split < k:
        off[split - 1] = 0.0  # two blocks: the second is invisible from e_1 (hard case)
    T = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    gamma = float(rng.uniform(0.1, 3.0))
    radius = 10.0**log_radius
    e1 = np.zeros(k)
    e1[0] = gamma
    _, m_star = closed_form_trust_region(T, e1, radius)
    sol = tridiagonal_subproblem(diag, off, gamma, radius, rtol=1e-12)
    assert np.linalg.norm(sol.h) <= radius * (1 + 1e-10)
    assert model_value(T, e1, sol.h) <= m_star + 1e-8 * max(1.0, abs(m_star))
    if not sol.interior:
        assert sol.lam >= max(0.0, -np.linalg.eigvalsh(T)[0]) - 1e-10


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # scipy's NaN
@pytest.mark.parametrize("method", ["trust-ncg", *METHODS])
@pytest.mark.parametrize(("log_cond", "gtol"), [(8, 1e-14), (4, 1e-20), (12, 1e-10)])
def test_out_of_reach_gtol_is_reported_as_scipy_does_and_not_later(method, log_cond, gtol):
    # f = 1 + (x - x*)^T A (x - x*) / 2: |g| cannot get below gtol in floating point
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    A = (Q * np.logspace(0, log_cond, 10)) @ Q.T
    x_star = rng.standard_normal(10)

    def fun(x):
        return 0.5 * (x - x_star) @ A @ (x - x_star) + 1.0

    def jac(x):
        return A @ (x - x_star)

    kwargs = {"hess": lambda x: A} if method in DENSE else {"hessp": lambda x, p: A @ p}
    options = {"gtol": gtol, "maxiter": 2000}
    ours = tr.minimize(fun, np.zeros(10), jac=jac, method=method, options=options, **kwargs)
    ref = scipy_minimize(fun, np.zeros(10), jac=jac, method=method, options=options, **kwargs)
    assert ref.status in (1, 2)  # scipy's trust-krylov can also loop on NaN to maxiter
    if ours.status == 0:  # reached gtol after all (|g| = 0 exactly can happen)
        assert np.linalg.norm(ours.jac) < gtol
        return
    assert ours.status == 2 and ours.reason is Status.NO_PREDICTED_DECREASE
    assert ours.message == "A bad approximation caused failure to predict improvement."
    assert ours.fun <= ref.fun + 1e-12
    if method == "trust-krylov" and log_cond == 12:
        # scipy's trlib stalls at f - f* = 1e-2 (rejected steps until its model value rounds
        # to f); ours goes on to the minimizer before it reports
        assert ours.fun - 1.0 < 1e-12 < ref.fun - 1.0
    else:
        assert ours.nit <= ref.nit
