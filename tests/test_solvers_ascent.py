"""divergence_ascent: natural-gradient maximum likelihood under a KL trust region."""

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize
from solver_problems import SoftmaxRegression

import trustregion as tr
from trustregion import Status


@pytest.fixture(scope="module")
def model():
    return SoftmaxRegression()


def solve(model, x0, delta, **kwargs):
    return tr.divergence_ascent(
        model.loglik, model.grad, model.kl, model.fisher_product, x0, delta, **kwargs
    )


@pytest.fixture(scope="module")
def mle(model):
    """The maximum-likelihood answer from scipy's L-BFGS-B."""
    res = scipy_minimize(
        lambda t: -model.loglik(t),
        np.zeros(model.dim),
        jac=lambda t: -model.grad(t),
        method="L-BFGS-B",
        options={"gtol": 1e-11, "ftol": 1e-15, "maxiter": 10_000},
    )
    assert res.success
    return res.x


def test_model_derivatives_against_finite_differences(model):
    rng = np.random.default_rng(1)
    theta, u = rng.standard_normal(model.dim), rng.standard_normal(model.dim)
    eps = 1e-6
    fd_grad = (model.loglik(theta + eps * u) - model.loglik(theta - eps * u)) / (2 * eps)
    assert model.grad(theta) @ u == pytest.approx(fd_grad, rel=1e-6)
    # the KL's Hessian at theta_ref is the Fisher matrix: second difference of the KL
    fd_fisher = (model.kl(theta, theta + eps * u) + model.kl(theta, theta - eps * u)) / eps**2
    assert u @ model.fisher_product(theta, u) == pytest.approx(fd_fisher, rel=1e-4)


@pytest.mark.parametrize("delta", [0.01, 0.1])
def test_softmax_regression_reaches_the_lbfgs_maximum_likelihood(model, mle, delta):
    steps = []
    res = solve(model, np.zeros(model.dim), delta, gtol=1e-7, callback=steps.append)
    assert res.status is Status.CONVERGED and res.success, res.message
    np.testing.assert_allclose(res.x, mle, atol=1e-6)
    # near the optimum the curvature-fitted start makes the step Newton's (Fisher = -Hessian)
    assert res.nit <= 20
    assert res.nfev <= res.nit + 5
    assert res.fun == pytest.approx(model.loglik(mle), abs=1e-12)
    assert res.grad_norm <= 1e-7
    assert len(steps) == res.nit
    # cg_iters products, one for the true-residual check when cg converges, one for H d
    assert res.nmp <= res.nit * 12


def test_every_accepted_step_keeps_the_divergence_bound_and_improves(model):
    delta = 0.02
    infos = []

    def record(intermediate_result):
        infos.append(intermediate_result)

    res = solve(model, np.zeros(model.dim), delta, gtol=1e-6, callback=record)
    assert res.success
    previous_x, previous_f = np.zeros(model.dim), model.loglik(np.zeros(model.dim))
    for info in infos:
        assert info.divergence <= delta
        assert model.kl(previous_x, info.x) == pytest.approx(info.divergence, rel=1e-12)
        assert info.fun > previous_f
        previous_x, previous_f = info.x, info.fun
    # far from the optimum, the full boundary step is taken
    assert infos[0].step_fraction == 1.0
    assert infos[0].divergence > 0.5 * delta


def test_without_warm_start_the_first_step_is_the_trpo_step(model):
    x0 = np.zeros(model.dim)
    infos = []
    solve(model, x0, 0.05, maxiter=1, warm_start=False, callback=lambda intermediate_result: (
        infos.append(intermediate_result)))  # fmt: skip
    trpo = tr.natural_gradient_step(model.grad(x0), lambda u: model.fisher_product(x0, u), 0.05)
    line = tr.backtracking_line_search(
        lambda x: (model.loglik(x), model.kl(x0, x)),
        x0,
        trpo.step,
        expected_improvement=trpo.expected_improvement,
        max_constraint=0.05,
    )
    np.testing.assert_array_equal(infos[0].x, line.x)


def test_warm_start_matters_near_the_optimum(model, mle):
    warm = solve(model, np.zeros(model.dim), 0.05, gtol=1e-7)
    cold = solve(model, np.zeros(model.dim), 0.05, gtol=1e-7, warm_start=False)
    assert warm.success
    assert np.abs(warm.x - mle).max() < np.abs(cold.x - mle).max()


def test_linear_objective_keeps_taking_boundary_steps_as_trpo():
    # f linear: the fitted curvature is ~0, so every search starts at the full step
    c = np.array([1.0, -2.0, 0.5])
    infos = []
    res = tr.divergence_ascent(
        lambda x: float(c @ x),
        lambda x: c,
        lambda x_ref, x: 0.4 * float((x - x_ref) @ (x - x_ref)),  # below the model 0.45 |dx|^2
        lambda x_ref, u: 0.9 * u,
        np.zeros(3),
        0.1,
        maxiter=5,
        callback=lambda intermediate_result: infos.append(intermediate_result),
    )
    assert res.status is Status.MAX_ITER
    assert [info.step_fraction for info in infos] == [1.0] * 5
    np.testing.assert_allclose(res.x, 5 * np.sqrt(2 * 0.1 / 0.9) * c / np.linalg.norm(c))


def test_categorical_counts_closed_form():
    freq = np.array([0.05, 0.15, 0.3, 0.5])

    def probs(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    res = tr.divergence_ascent(
        lambda z: float(freq @ np.log(probs(z))),
        lambda z: freq - probs(z),
        lambda z_ref, z: float(probs(z_ref) @ np.log(probs(z_ref) / probs(z))),
        lambda z_ref, u: probs(z_ref) * u - probs(z_ref) * (probs(z_ref) @ u),
        np.zeros(4),
        0.05,
        gtol=1e-8,
    )
    assert res.success, res.message
    np.testing.assert_allclose(probs(res.x), freq, atol=1e-7)


def quadratic(x):
    return -float(x @ x)


def quadratic_grad(x):
    return -2 * x


def euclid(x_ref, x):
    return 0.5 * float((x - x_ref) @ (x - x_ref))


def identity(x_ref, u):
    return u


class TestStatuses:
    def test_converged_at_once_when_the_gradient_vanishes(self):
        res = tr.divergence_ascent(quadratic, quadratic_grad, euclid, identity, np.zeros(3), 0.1)
        assert res.status is Status.CONVERGED and res.nit == 0 and res.nmp == 0

    def test_max_iter(self):
        infos = []
        res = tr.divergence_ascent(
            quadratic,
            quadratic_grad,
            euclid,
            identity,
            np.full(3, 100.0),
            0.1,
            maxiter=4,
            callback=lambda intermediate_result: infos.append(intermediate_result),
        )
        assert res.status is Status.MAX_ITER and res.nit == 4 and not res.success
        # each step moves a fraction of sqrt(2 delta) (the boundary) straight towards 0
        fractions = [info.step_fraction for info in infos]
        assert all(0.5 < f <= 1.0 for f in fractions)
        assert np.linalg.norm(res.x - 100.0) == pytest.approx(
            sum(fractions) * np.sqrt(0.2), rel=1e-12
        )
        np.testing.assert_allclose(res.x / res.x[0], 1.0)

    def test_line_search_failing_repeatedly(self):
        res = tr.divergence_ascent(
            quadratic,
            quadratic_grad,
            lambda x_ref, x: 1.0,  # every trial breaks the bound
            identity,
            np.ones(2),
            0.1,
            max_failed_searches=3,
        )
        assert res.status is Status.LINE_SEARCH_FAILED
        assert res.n_failed_searches == 3 and res.nit == 1
        assert res.ndev == 3 * 11  # three searches of max_backtracks + 1 trials, one direction
        np.testing.assert_array_equal(res.x, np.ones(2))
        assert "constraint" in res.message

    def test_step_failed_on_a_negative_metric(self):
        res = tr.divergence_ascent(
            quadratic, quadratic_grad, euclid, lambda x_ref, u: -u, np.ones(2), 0.1
        )
        assert res.status is Status.STEP_FAILED
        np.testing.assert_array_equal(res.x, np.ones(2))

    @pytest.mark.parametrize("which", ["grad", "metric_product"])
    def test_non_finite_during_the_run(self, which):
        calls = [0]

        def grad(x):
            calls[0] += 1
            return quadratic_grad(x) * (np.nan if which == "grad" and calls[0] > 2 else 1.0)

        def metric(x_ref, u):
            return u * (np.nan if which == "metric_product" and calls[0] > 2 else 1.0)

        res = tr.divergence_ascent(quadratic, grad, euclid, metric, np.full(2, 10.0), 0.1)
        assert res.status is Status.NON_FINITE
        assert which in res.message
        assert np.all(np.isfinite(res.x)) and np.all(np.isfinite(res.grad))
        assert res.fun == quadratic(res.x)

    def test_callback_stop(self):
        def stop(xk):
            raise StopIteration

        res = tr.divergence_ascent(
            quadratic, quadratic_grad, euclid, identity, np.ones(2), 0.1, callback=stop
        )
        assert res.status is Status.CALLBACK_STOP and res.nit == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delta": 0.0}, ValueError, "delta"),
        ({"delta": -1.0}, ValueError, "delta"),
        ({"fun": lambda x: np.nan}, ValueError, r"fun\(x0\)"),
        ({"grad": lambda x: np.array([np.inf, 0.0])}, ValueError, r"grad\(x0\)"),
        ({"grad": lambda x: np.zeros(3)}, ValueError, "grad returned shape"),
        ({"metric_product": lambda x, u: np.zeros(3)}, ValueError, "metric_product returned"),
        ({"divergence": None}, TypeError, "divergence must be callable"),
        ({"x0": [[1.0, 2.0]]}, ValueError, "x0"),
        ({"shrink": 1.0}, ValueError, "shrink"),
        ({"max_failed_searches": 0}, ValueError, "max_failed_searches"),
        ({"gtol": -1.0}, ValueError, "gtol"),
    ],
)
def test_misuse_raises_naming_the_argument(kwargs, error, match):
    call = {
        "fun": quadratic,
        "grad": quadratic_grad,
        "divergence": euclid,
        "metric_product": identity,
        "x0": np.ones(2),
        "delta": 0.1,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        tr.divergence_ascent(
            call.pop("fun"),
            call.pop("grad"),
            call.pop("divergence"),
            call.pop("metric_product"),
            call.pop("x0"),
            call.pop("delta"),
            **call,
        )
