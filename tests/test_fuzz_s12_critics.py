"""Fuzzing round 12: the critics' fits (Adam, L-BFGS, the trust-region fit) on degenerate and
extreme batches, and the config's translations (``from_sb3``, ``from_json``,
``parse_overrides``).

Each test is the reproduction of one bug this round found: bad input gets an error naming
the argument or a reported status, never NaN parameters, a raw error from a dependency or
a misleading message.
"""

import json

import gymnasium as gym
import numpy as np
import pytest

from rl_adapters import TRPO
from rl_adapters.config import TRPOConfig, parse_overrides
from rl_adapters.mlp import MLP
from rl_adapters.value import ValueFunction
from rl_adapters.value_trust_region import TrustRegionValueFit
from trustregion import Status

TINY = {"n_steps": 64, "n_envs": 1, "value_epochs": 1, "value_batch_size": 64}


class ConstantRewardEnv(gym.Env):
    """Gaussian observations, two actions, the same reward at every step, 20-step episodes."""

    def __init__(self, reward: float = 1.0, obs_scale: float = 1.0):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = gym.spaces.Discrete(2)
        self.reward, self.obs_scale = reward, obs_scale

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(3) * self.obs_scale, {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.standard_normal(3) * self.obs_scale
        return obs, self.reward, self.t >= 20, False, {}


def _critic(obs_dim=3, hidden=(8,)):
    critic = ValueFunction(obs_dim, hidden)
    critic.init(np.random.default_rng(1))
    return critic


# ------------------------------------------------------------- trust-region critic
def test_trust_region_fit_reports_non_finite_when_the_squared_residuals_overflow():
    # returns of 1e155 (finite): sigma^2 = inf, and the fit raised the core's
    # "ValueError: delta must be finite and >= 0, got inf", a setting the user never wrote
    net = MLP((3, 8, 1))
    rng = np.random.default_rng(0)
    theta = net.init(rng)
    obs = rng.standard_normal((32, 3))
    with np.errstate(over="ignore"):
        new_theta, info = TrustRegionValueFit(net).fit(theta, obs, np.full(32, 1e155))
    assert info["status"] is Status.NON_FINITE and not info["success"]
    assert "sigma^2" in info["message"] and "normalize_reward" in info["message"]
    np.testing.assert_array_equal(new_theta, theta)


def test_trust_region_fit_with_a_huge_epsilon_steps_instead_of_raising():
    # epsilon * sigma^2 = 1e307 * 900 overflowed to inf: the same raw "delta" error, where
    # the trust region only means "no bound" and the Gauss-Newton step is the answer
    net = MLP((3, 8, 1))
    rng = np.random.default_rng(0)
    theta = net.init(rng)
    obs = rng.standard_normal((32, 3))
    targets = 30.0 * rng.standard_normal(32)
    _, info = TrustRegionValueFit(net, epsilon=1e307, gn_dtype="float64").fit(
        theta, obs, targets)
    assert info["status"] is Status.ACCEPTED and info["newton_steps"] == 1
    assert info["mse_after"] < info["mse_before"]


def test_trust_region_fit_with_an_underflowing_radius_reports_a_status():
    # sigma^2 = 1e-300 and epsilon = 1e-30: the radius underflowed to 0.0 and the fit raised
    # "ValueError: delta must be > 0, got 0.0"
    net = MLP((3, 1))
    rng = np.random.default_rng(0)
    theta = np.zeros(net.n_params)
    obs = rng.standard_normal((32, 3))
    new_theta, info = TrustRegionValueFit(net, epsilon=1e-30, gn_dtype="float64").fit(
        theta, obs, 1e-150 * rng.standard_normal(32))
    assert not info["success"] and info["status"] in (
        Status.CONSTRAINT_VIOLATED, Status.NO_IMPROVEMENT)
    np.testing.assert_array_equal(new_theta, theta)


def test_agent_with_the_trust_region_critic_and_overflowing_returns_reports_non_finite():
    # rewards of 1e153 pass the environment checks (their squares are finite) but the
    # returns' squares are not: the first update raised "delta must be finite"
    agent = TRPO(ConstantRewardEnv(1e153), seed=0, value_optimizer="trust_region",
                 value_tr_dtype="float64", **TINY)
    theta = agent.value.theta.copy()
    with np.errstate(over="ignore"):
        row = agent.train_one_update()
    assert row["value_fit_status"] == "NON_FINITE"
    np.testing.assert_array_equal(agent.value.theta, theta)


# -------------------------------------------------------------------- Adam critic
def test_float32_adam_critic_that_overflows_stops_with_an_error_naming_value_dtype():
    # returns of 1e41 are beyond float32: the fit left NaN parameters in the critic
    # silently, and the next update failed in the policy step with the core's
    # "ValueError: g must be finite, got g[0] = nan"
    agent = TRPO(ConstantRewardEnv(1e40), seed=0, value_optimizer="adam",
                 value_dtype="float32", **TINY)
    critic = agent.value
    theta, m, v, t = (critic.theta.copy(), critic.adam.m.copy(), critic.adam.v.copy(),
                      critic.adam.t)
    with pytest.raises(ValueError, match=r"^the critic's Adam fit overflowed in float32 "
                                         r"\(value_dtype\).*value_dtype='float64'"), \
            np.errstate(over="ignore", invalid="ignore"):
        for _ in range(2):
            agent.train_one_update()
    # the critic and its Adam state are as they were: finite, and the run can be saved
    np.testing.assert_array_equal(critic.theta, theta)
    np.testing.assert_array_equal(critic.adam.m, m)
    np.testing.assert_array_equal(critic.adam.v, v)
    assert critic.adam.t == t


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_fit_that_overflows_restores_the_critic_and_its_moments(dtype):
    # returns of 1e200: the moments became inf (float64) or the parameters NaN (float32)
    critic = _critic()
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((16, 3))
    theta, m, v = critic.theta.copy(), critic.adam.m.copy(), critic.adam.v.copy()
    with pytest.raises(ValueError, match=rf"^the critic's Adam fit overflowed in {dtype}"), \
            np.errstate(over="ignore", invalid="ignore"):
        critic.fit(obs, np.full(16, 1e200), rng, optimizer="adam", dtype=dtype)
    np.testing.assert_array_equal(critic.theta, theta)
    np.testing.assert_array_equal(critic.adam.m, m)
    np.testing.assert_array_equal(critic.adam.v, v)
    assert critic.adam.t == 0


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize(("obs_rows", "targets", "message"), [
    (16, np.where(np.arange(16) == 3, np.nan, 1.0), r"^targets must be finite"),
    (16, np.where(np.arange(16) == 3, np.inf, 1.0), r"^targets must be finite"),
    (0, np.zeros(0), r"^obs must have shape \(B >= 1, 3\), got \(0, 3\)"),
    (16, np.zeros(5), r"^targets must have shape \(16,\) like obs' rows, got \(5,\)"),
    (16, np.zeros((16, 1)), r"^targets must have shape \(16,\)"),
])
def test_value_fit_refuses_a_bad_batch_naming_it(optimizer, obs_rows, targets, message):
    # NaN or inf returns gave Adam NaN parameters silently, no rows a raw
    # ZeroDivisionError, mismatched shapes NumPy's broadcast errors
    critic = _critic()
    theta = critic.theta.copy()
    obs = np.random.default_rng(0).standard_normal((obs_rows, 3))
    with pytest.raises(ValueError, match=message):
        critic.fit(obs, targets, np.random.default_rng(0), optimizer=optimizer)
    np.testing.assert_array_equal(critic.theta, theta)


def test_value_fit_refuses_non_finite_observations():
    critic = _critic()
    obs = np.ones((4, 3))
    obs[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^obs must be finite"):
        critic.fit(obs, np.ones(4), np.random.default_rng(0))


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"optimizer": "sgd"}, ValueError, r"^optimizer='sgd': must be one of adam, lbfgs"),
    ({"batch_size": 0}, ValueError, r"^batch_size=0: must be an int >= 1"),
    ({"batch_size": 2.5}, TypeError, r"^batch_size=2.5: must be an int >= 1"),
    ({"epochs": 0}, ValueError, r"^epochs=0: must be an int >= 1"),
    ({"lbfgs_iters": -1, "optimizer": "lbfgs"}, ValueError, r"^lbfgs_iters=-1"),
    ({"lr": float("nan")}, ValueError, r"^lr=nan: must be a finite number > 0"),
    ({"lr": -1e-3}, ValueError, r"^lr=-0.001: must be a finite number > 0"),
    ({"l2": -1.0}, ValueError, r"^l2=-1.0: must be a finite number >= 0"),
    ({"epochs": True}, TypeError, r"^epochs=True: must be an int >= 1"),
])
def test_value_fit_refuses_a_bad_setting_naming_it(kwargs, error, message):
    # "sgd" ran Adam (a wrong success), batch_size 0 made no step and said nothing, lr NaN
    # gave NaN parameters, a negative lr climbed the loss, epochs 0 raised NumPy's "need at
    # least one array to stack"
    critic = _critic()
    rng = np.random.default_rng(0)
    with pytest.raises(error, match=message):
        critic.fit(rng.standard_normal((8, 3)), rng.standard_normal(8), rng, **kwargs)


def test_value_fit_keeps_its_results_for_good_input():
    # the checks change nothing for a valid batch (the same bits as an unchecked fit)
    rng = np.random.default_rng(0)
    obs, targets = rng.standard_normal((32, 3)), rng.standard_normal(32)
    for optimizer in ("adam", "lbfgs"):
        a, b = _critic(), _critic()
        a.fit(obs, targets, np.random.default_rng(5), optimizer=optimizer, batch_size=8)
        b.fit(obs.tolist(), targets.tolist(), np.random.default_rng(5), optimizer=optimizer,
              batch_size=np.int64(8))
        np.testing.assert_array_equal(a.theta, b.theta)


# ------------------------------------------------------------------------ config
def test_from_sb3_with_a_nan_gamma_names_gamma():
    # was a raw "KeyError: 'gamma'" (the normalize check compared nan != nan)
    with pytest.raises(ValueError, match=r"config gamma=nan: must be in \[0, 1\] "
                                         r"\(from SB3-contrib's gamma\)"):
        TRPOConfig.from_sb3("CartPole-v1", gamma=float("nan"))


def test_from_sb3_takes_a_numpy_bool_for_normalize():
    # was "normalize=np.True_: expected a bool or a dict ..., got bool"
    assert TRPOConfig.from_sb3("CartPole-v1", normalize=np.bool_(True)) == \
        TRPOConfig.from_sb3("CartPole-v1", normalize=True)


def test_from_sb3_with_a_huge_sub_sampling_factor_names_it():
    # 10**400 raised a raw "OverflowError: int too large to convert to float"
    with pytest.raises(ValueError, match=r"^SB3-contrib argument sub_sampling_factor=1000"):
        TRPOConfig.from_sb3("CartPole-v1", sub_sampling_factor=10**400)


def test_from_sb3_names_the_bad_half_of_a_net_arch_dict():
    # was "policy_kwargs['net_arch']=32: expected int,..., got int"
    with pytest.raises(TypeError, match=r"^SB3-contrib argument policy_kwargs\['net_arch'\]"
                                        r"\['pi'\]=32: expected a list of ints, got int"):
        TRPOConfig.from_sb3("CartPole-v1", policy_kwargs={"net_arch": {"pi": 32, "vf": [64]}})


@pytest.mark.parametrize("text", ["null", "3", '"abc"', "[1, 2]", "true"])
def test_from_json_refuses_a_document_that_is_not_an_object(text):
    # "null" and "3" raised "TypeError: 'NoneType' object is not iterable", '"abc"' said
    # "unknown config key 'a'" and "[1, 2]" "unknown config key 1"
    with pytest.raises(ValueError, match=r"^config JSON: expected an object of field: value "
                                         r"pairs, got "):
        TRPOConfig.from_json(text)


def test_a_float_field_given_an_int_beyond_floats_range_names_the_field():
    # a JSON integer of 401 digits raised "OverflowError: int too large to convert to float"
    text = json.dumps({**json.loads(TRPOConfig().to_json()), "max_kl": 10**400})
    with pytest.raises(ValueError, match=r"^config max_kl: an int of \d+ bits is beyond "
                                         r"float's range"):
        TRPOConfig.from_json(text)


def test_parse_overrides_refuses_a_string_and_non_string_items():
    # "max_kl=0.1" was read character by character ("override 'm' is not of the form
    # key=value"); an int item raised "AttributeError: 'int' object has no attribute
    # 'partition'"
    with pytest.raises(TypeError, match=r"^items must be a list of 'key=value' strings"):
        parse_overrides("max_kl=0.1")
    with pytest.raises(TypeError, match=r"^override 3: expected a 'key=value' string, "
                                        r"got int"):
        parse_overrides(["max_kl=0.1", 3])
