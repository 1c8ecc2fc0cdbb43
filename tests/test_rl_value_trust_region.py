"""Trust-region value fit (GAE section 5): Gauss-Newton products against references, the
constraint is never broken, the MSE goes down, least squares is recovered, bad settings raise."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl_adapters.mlp import MLP
from rl_adapters.value_trust_region import GaussNewtonOperator, TrustRegionValueFit
from trustregion import Status


def _problem(sizes=(3, 6, 5, 1), activation="tanh", n=9, seed=0):
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation)
    theta = net.init(rng) + 0.2 * rng.standard_normal(net.n_params)
    obs = rng.standard_normal((n, sizes[0]))
    return net, theta, obs, rng


def _values(net, theta, obs):
    return net.forward(theta, obs, keep_cache=False)[0][:, 0]


def _grad_half_mean_sq_change(net, theta0, obs, theta):
    """Gradient at ``theta`` of 1/2 mean((V_theta - V_theta0)^2), by the network's VJP."""
    out, cache = net.forward(theta, obs)
    diff = out[:, 0] - _values(net, theta0, obs)
    return net.vjp(theta, cache, diff[:, None] / obs.shape[0])


def _fd_jacobian(net, theta, obs, h=1e-6):
    """(B, n) Jacobian of the outputs, column by column by central differences."""
    cols = []
    for j in range(net.n_params):
        e = np.zeros(net.n_params)
        e[j] = h
        cols.append((_values(net, theta + e, obs) - _values(net, theta - e, obs)) / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gauss_newton_product_equals_finite_differences_of_the_gradient(activation):
    # At theta0 the residuals of 1/2 mean((V - V0)^2) vanish, so its Hessian is J^T J / B
    # exactly: the product must match differences of the gradient along v.
    net, theta, obs, rng = _problem(activation=activation, seed=1)
    gn = GaussNewtonOperator.at(net, theta, obs)
    h = 1e-5
    for _ in range(3):
        v = rng.standard_normal(net.n_params)
        fd = (_grad_half_mean_sq_change(net, theta, obs, theta + h * v)
              - _grad_half_mean_sq_change(net, theta, obs, theta - h * v)) / (2 * h)
        np.testing.assert_allclose(gn(v), fd, rtol=1e-6, atol=1e-9)


def test_gauss_newton_product_equals_explicit_jtj_built_column_by_column():
    net, theta, obs, _ = _problem(sizes=(2, 4, 1), n=6, seed=2)
    J = _fd_jacobian(net, theta, obs)
    G = J.T @ J / obs.shape[0]
    gn = GaussNewtonOperator.at(net, theta, obs)
    dense = np.stack([gn(e) for e in np.eye(net.n_params)], axis=1)
    np.testing.assert_allclose(dense, G, rtol=1e-6, atol=1e-9)
    assert gn.n_calls == net.n_params


def test_float32_products_agree_with_float64():
    net, theta, obs, rng = _problem(sizes=(4, 32, 32, 1), n=200, seed=3)
    g64 = GaussNewtonOperator.at(net, theta, obs)
    g32 = GaussNewtonOperator.at(net, theta, obs, np.float32)
    for _ in range(3):
        v = rng.standard_normal(net.n_params)
        a, b = g64(v), g32(v)
        assert b.dtype == np.float64
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), hidden=st.integers(1, 6), n=st.integers(1, 12),
       activation=st.sampled_from(["tanh", "relu"]))
def test_gauss_newton_operator_is_symmetric_and_psd(seed, hidden, n, activation):
    net, theta, obs, rng = _problem(sizes=(3, hidden, 1), activation=activation, n=n,
                                    seed=seed)
    gn = GaussNewtonOperator.at(net, theta, obs)
    u, v = rng.standard_normal((2, net.n_params))
    scale = np.linalg.norm(gn(u)) * np.linalg.norm(v) + np.linalg.norm(gn(v)) * np.linalg.norm(u)
    assert abs(u @ gn(v) - v @ gn(u)) <= 1e-12 * (1.0 + scale)
    # v^T J^T J v / B = |J v|^2 / B >= 0, and equals it.
    jv = net.jvp(theta, net.forward(theta, obs)[1], v)
    assert v @ gn(v) == pytest.approx(float(jv[:, 0] @ jv[:, 0]) / n, rel=1e-10, abs=1e-300)
    assert v @ gn(v) >= 0.0


def _regression(seed, n=128, sizes=(2, 16, 1)):
    rng = np.random.default_rng(seed)
    net = MLP(sizes)
    theta = net.init(rng)
    obs = rng.uniform(-2, 2, (n, sizes[0]))
    targets = 3.0 * np.tanh(obs[:, 0]) - obs[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    return net, theta, obs, targets, rng


@settings(max_examples=20)
@given(seed=st.integers(0, 2**16), epsilon=st.floats(1e-4, 10.0),
       damping=st.sampled_from([0.0, 1e-3, 0.1]), cg_iters=st.integers(1, 15),
       scale=st.sampled_from([0.01, 1.0, 100.0]))
def test_accepted_step_keeps_the_constraint_and_lowers_the_mse(seed, epsilon, damping,
                                                               cg_iters, scale):
    net, theta, obs, targets, _ = _regression(seed)
    targets = scale * targets
    fit = TrustRegionValueFit(net, epsilon=epsilon, damping=damping, cg_iters=cg_iters)
    new_theta, info = fit.fit(theta, obs, targets)
    v0, v1 = _values(net, theta, obs), _values(net, new_theta, obs)
    sigma2 = np.mean((v0 - targets) ** 2)
    constraint = np.mean((v1 - v0) ** 2) / (2 * sigma2)
    assert info["mse_before"] == pytest.approx(sigma2, rel=1e-12)
    assert info["mse_after"] == pytest.approx(np.mean((v1 - targets) ** 2), rel=1e-12)
    assert info["constraint"] == pytest.approx(constraint, rel=1e-9, abs=1e-15)
    if info["success"]:
        assert info["status"] is Status.ACCEPTED and info["steps"] == 1
        assert constraint <= epsilon
        assert info["mse_after"] < info["mse_before"]
    else:
        # No accepted step: the parameters do not move.
        np.testing.assert_array_equal(new_theta, theta)
        assert info["status"] in (Status.NO_IMPROVEMENT, Status.CONSTRAINT_VIOLATED)


def test_fit_on_a_network_is_accepted_and_does_not_touch_the_input():
    net, theta, obs, targets, _ = _regression(5, sizes=(2, 32, 32, 1))
    keep = theta.copy()
    fit = TrustRegionValueFit(net, epsilon=0.05, cg_iters=10)
    _, info = fit.fit(theta, obs, targets)
    np.testing.assert_array_equal(theta, keep)
    assert info["success"] and info["status"].name == "ACCEPTED"
    assert info["mse_after"] < info["mse_before"]
    assert 0.0 < info["constraint"] <= 0.05
    assert info["cg_iters"] == 10 and info["gn_products"] == 11


def test_more_outer_iterations_fit_further():
    net, theta, obs, targets, _ = _regression(6, sizes=(2, 32, 1))
    one = TrustRegionValueFit(net, epsilon=0.1).fit(theta, obs, targets)[1]
    five = TrustRegionValueFit(net, epsilon=0.1, outer_iters=5).fit(theta, obs, targets)[1]
    assert five["steps"] == five["outer_iters"] == 5
    assert five["mse_after"] < one["mse_after"] < one["mse_before"]


@pytest.mark.parametrize(("gn_dtype", "rtol"), [("float64", 1e-8), ("float32", 1e-5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_model_with_a_large_trust_region_gives_least_squares(with_bias, gn_dtype, rtol):
    # No hidden layer: V is linear in the parameters, the Gauss-Newton model is exact and
    # the step stops at its minimizer, the least-squares solution.
    rng = np.random.default_rng(7)
    net = MLP((4, 1))
    theta = net.init(rng)
    obs = rng.standard_normal((40, 4))
    targets = obs @ rng.standard_normal(4) + (1.5 if with_bias else 0.0)
    targets += 0.3 * rng.standard_normal(40)
    fit = TrustRegionValueFit(net, epsilon=1e6, cg_iters=net.n_params, damping=0.0,
                              gn_dtype=gn_dtype)
    new_theta, info = fit.fit(theta, obs, targets)
    design = np.c_[obs, np.ones(40)]
    lstsq, *_ = np.linalg.lstsq(design, targets, rcond=None)
    np.testing.assert_allclose(new_theta, lstsq, rtol=rtol, atol=rtol / 100)
    assert info["newton_steps"] == 1 and info["step_fraction"] == 1.0
    assert info["mse_after"] == pytest.approx(np.mean((design @ lstsq - targets) ** 2))


def test_linear_model_with_a_small_trust_region_lands_on_the_boundary():
    # Linear model: the constraint is exactly quadratic, so the full step (no damping, exact
    # CG) lands on it (aimed a relative 1e-6 inside, against rounding) and is accepted.
    rng = np.random.default_rng(8)
    net = MLP((3, 1))
    obs = rng.standard_normal((30, 3))
    targets = obs @ np.array([1.0, -2.0, 0.5]) + 2.0
    fit = TrustRegionValueFit(net, epsilon=0.01, cg_iters=net.n_params, damping=0.0,
                              gn_dtype="float64")
    _, info = fit.fit(np.zeros(net.n_params), obs, targets)
    assert info["step_fraction"] == 1.0 and info["newton_steps"] == 0
    assert 0.01 * (1 - 2e-6) <= info["constraint"] <= 0.01


def test_subsampled_products_need_an_rng_and_are_reproducible():
    net, theta, obs, targets, _ = _regression(9)
    fit = TrustRegionValueFit(net, epsilon=0.05, gn_subsample=0.25)
    with pytest.raises(ValueError, match="rng"):
        fit.fit(theta, obs, targets)
    a, info = fit.fit(theta, obs, targets, rng=np.random.default_rng(0))
    b, _ = fit.fit(theta, obs, targets, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert info["success"] and info["constraint"] <= 0.05


def test_exact_fit_already_reports_zero_direction():
    net, theta, obs, _, _ = _regression(10)
    fit = TrustRegionValueFit(net)
    new_theta, info = fit.fit(theta, obs, _values(net, theta, obs))
    assert info["status"] is Status.ZERO_DIRECTION and not info["success"]
    np.testing.assert_array_equal(new_theta, theta)
    assert info["mse_after"] == info["mse_before"] == 0.0


def test_state_dict_round_trips_through_npz(tmp_path):
    net = MLP((3, 4, 1))
    fit = TrustRegionValueFit(net, epsilon=0.2, cg_iters=7, damping=0.05, outer_iters=3,
                              gn_subsample=0.5, gn_dtype="float32")
    path = tmp_path / "state.npz"
    np.savez(path, **fit.state_dict())
    with np.load(path, allow_pickle=False) as data:
        loaded = {k: data[k] for k in data.files}
    other = TrustRegionValueFit(net)
    other.load_state_dict(loaded)
    assert other.state_dict() == fit.state_dict()
    assert isinstance(other.cg_iters, int) and other.gn_dtype == "float32"


@pytest.mark.parametrize(("setting", "value", "match"), [
    ("epsilon", 0.0, "epsilon=0.0: must be a finite number > 0"),
    ("epsilon", -0.01, "epsilon=-0.01"),
    ("epsilon", float("nan"), "epsilon=nan"),
    ("epsilon", float("inf"), "epsilon=inf"),
    ("cg_iters", 0, "cg_iters=0: must be an int >= 1"),
    ("damping", -1e-3, "damping=-0.001: must be a finite number >= 0"),
    ("outer_iters", 0, "outer_iters=0"),
    ("gn_subsample", 0.0, "gn_subsample=0.0: must lie in (0, 1]"),
    ("gn_subsample", 1.5, "gn_subsample=1.5"),
    ("gn_dtype", "float16", "gn_dtype='float16'"),
    ("cg_rtol", 0.0, "cg_rtol=0.0"),
    ("ls_shrink", 1.0, "ls_shrink=1.0: must lie in (0, 1)"),
    ("ls_max_backtracks", -1, "ls_max_backtracks=-1"),
])
def test_bad_settings_raise_naming_the_setting(setting, value, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        TrustRegionValueFit(MLP((2, 1)), **{setting: value})


@pytest.mark.parametrize(("setting", "value"), [
    ("epsilon", "0.01"), ("cg_iters", 2.5), ("cg_iters", True), ("damping", None),
])
def test_wrong_types_raise_type_error_naming_the_setting(setting, value):
    with pytest.raises(TypeError, match=f"{setting}="):
        TrustRegionValueFit(MLP((2, 1)), **{setting: value})


def test_bad_state_raises_and_leaves_the_fitter_unchanged():
    fit = TrustRegionValueFit(MLP((2, 1)), epsilon=0.3)
    state = fit.state_dict() | {"epsilon": -1.0}
    with pytest.raises(ValueError, match=re.escape("epsilon=-1.0")):
        fit.load_state_dict(state)
    assert fit.epsilon == 0.3
    with pytest.raises(KeyError, match="missing keys"):
        fit.load_state_dict({"epsilon": 0.1})


def test_bad_inputs_raise_naming_the_argument():
    net, theta, obs, targets, _ = _regression(11)
    fit = TrustRegionValueFit(net)
    with pytest.raises(ValueError, match="theta must have shape"):
        fit.fit(theta[:-1], obs, targets)
    with pytest.raises(ValueError, match="obs must have shape"):
        fit.fit(theta, obs[:, :1], targets)
    with pytest.raises(ValueError, match="targets must have shape"):
        fit.fit(theta, obs, targets[:-1])
    bad = targets.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="targets must be finite"):
        fit.fit(theta, obs, bad)
    with pytest.raises(ValueError, match="one output"):
        TrustRegionValueFit(MLP((2, 3)))
    with pytest.raises(TypeError, match="net must be"):
        TrustRegionValueFit("net")  # type: ignore[arg-type]
