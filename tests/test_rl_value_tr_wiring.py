"""The trust-region critic fit (GAE section 5) wired in as value_optimizer='trust_region'."""

import math

import numpy as np
import pytest

import trustregion as tr
from rl_adapters import TRPO, TRPOConfig
from rl_adapters.agent import METRIC_KEYS, TEXT_METRIC_KEYS
from rl_adapters.value_trust_region import TrustRegionValueFit

TR = {"value_optimizer": "trust_region", "n_steps": 64, "n_envs": 2}


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.inf, math.nan])
def test_a_non_positive_or_non_finite_value_trust_region_is_one_clear_error(epsilon):
    with pytest.raises(ValueError, match=r"config value_tr_epsilon=.*: must be > 0, finite"):
        TRPOConfig.for_env("CartPole-v1", value_optimizer="trust_region",
                           value_tr_epsilon=epsilon)


@pytest.mark.parametrize("overrides, needle", [
    ({"value_tr_cg_iters": 0}, "config value_tr_cg_iters=0: must be >= 1"),
    ({"value_tr_damping": -0.1}, "config value_tr_damping=-0.1: must be >= 0"),
    ({"value_tr_outer_iters": 0}, "config value_tr_outer_iters=0: must be >= 1"),
    ({"value_tr_subsample": 0.0}, "config value_tr_subsample=0.0: must be in (0, 1]"),
    ({"value_tr_subsample": 1.5}, "config value_tr_subsample=1.5: must be in (0, 1]"),
    ({"value_tr_dtype": "float16"}, "config value_tr_dtype='float16': must be one of"),
    ({"value_optimizer": "sgd"}, "must be one of adam, lbfgs, trust_region"),
])
def test_bad_value_trust_region_settings_name_the_field(overrides, needle):
    with pytest.raises(ValueError, match=__import__("re").escape(needle)):
        TRPOConfig.for_env("CartPole-v1", **overrides)


def test_the_agent_builds_the_fitter_from_the_config():
    agent = TRPO("CartPole-v1", seed=0, **TR, value_tr_epsilon=0.3, value_tr_cg_iters=4,
                 value_tr_damping=0.2, value_tr_outer_iters=2, value_tr_subsample=0.5,
                 value_tr_dtype="float64")
    fit = agent.value_fit
    assert isinstance(fit, TrustRegionValueFit) and fit.net is agent.value.net
    assert (fit.epsilon, fit.cg_iters, fit.damping, fit.outer_iters, fit.gn_subsample,
            fit.gn_dtype) == (0.3, 4, 0.2, 2, 0.5, "float64")
    assert TRPO("CartPole-v1", seed=0).value_fit is None


@pytest.mark.parametrize("epsilon", [0.01, 0.1])
def test_the_fit_stays_in_its_trust_region(epsilon):
    # mean((V_new - V_old)^2) <= 2 eps mse_old, so by the triangle inequality
    # sqrt(mse_after) >= sqrt(mse_before) (1 - sqrt(2 eps)): a bound the fit must respect.
    # One step per fit: the bound is per step (outer_iters > 1 re-centres each step).
    agent = TRPO("Pendulum-v1", seed=1, **TR, value_tr_epsilon=epsilon, value_tr_outer_iters=1)
    agent.learn(4 * agent.config.batch_size)
    for m in agent.metrics:
        assert m["value_fit_status"] in {s.name for s in tr.Status}
        ratio = math.sqrt(m["value_mse_after"] / m["value_loss"])
        assert ratio >= 1.0 - math.sqrt(2.0 * epsilon) - 1e-9
        if m["value_fit_status"] == "ACCEPTED":
            assert m["value_mse_after"] < m["value_loss"]
        else:
            assert m["value_mse_after"] == m["value_loss"]


def test_critic_fit_metrics_are_columns_for_every_optimizer():
    assert {"value_mse_after", "value_fit_status"} <= set(METRIC_KEYS)
    assert "value_fit_status" in TEXT_METRIC_KEYS and "value_mse_after" not in TEXT_METRIC_KEYS
    for optimizer in ("adam", "lbfgs"):
        agent = TRPO("CartPole-v1", seed=0, n_steps=64, value_optimizer=optimizer)
        (m,) = agent.learn(128).metrics
        assert m["value_fit_status"] == ""
        assert np.isfinite(m["value_mse_after"])
        err = agent.value.predict(np.zeros((1, 4)))  # the critic is usable afterwards
        assert np.all(np.isfinite(err))


def test_a_trust_region_critic_checkpoint_resumes_bitwise(tmp_path):
    config = {**TR, "value_tr_subsample": 0.5, "normalize_obs": True}
    steps = config["n_envs"] * config["n_steps"]
    straight = TRPO("CartPole-v1", seed=2, **config).learn(3 * steps)
    first = TRPO("CartPole-v1", seed=2, **config).learn(2 * steps)
    first.save(str(tmp_path / "ckpt.npz"))
    resumed = TRPO.load(str(tmp_path / "ckpt.npz"))
    assert resumed.value_fit.state_dict() == first.value_fit.state_dict()
    resumed.learn(steps)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    np.testing.assert_array_equal(resumed.value.theta, straight.value.theta)
    assert resumed.metrics[-1]["value_fit_status"] == straight.metrics[-1]["value_fit_status"]
