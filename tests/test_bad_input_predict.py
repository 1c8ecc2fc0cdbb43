"""Issue 9, cause 5 (agent part): observations handed to the agent at its public boundary.

``predict``, ``normalize_obs``, ``evaluate`` and the NumPy-only policy of ``load_policy``
check shapes, dtypes and finiteness before the unchecked kernels run: a ValueError naming
``obs`` and the expected shape, never an action read past the end of an array.
"""

import re

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rl_adapters import TRPO, load_policy
from rl_adapters.policies import CategoricalPolicy, DiagGaussianPolicy
from rl_adapters.sde import StateDependentGaussianPolicy

SMALL = {"n_steps": 16, "n_envs": 1, "value_epochs": 1, "value_batch_size": 16}
# Every policy kind: categorical, the plain Gaussian (Pendulum with gSDE off) and gSDE
# (Pendulum's default): (env, overrides, the policy class expected).
POLICIES = [("CartPole-v1", {}, CategoricalPolicy),
            ("Pendulum-v1", {"use_sde": False}, DiagGaussianPolicy),
            ("Pendulum-v1", {}, StateDependentGaussianPolicy)]
POLICY_IDS = ["CartPole-v1", "Pendulum-v1-gaussian", "Pendulum-v1-gsde"]


@pytest.fixture(scope="module", params=POLICIES, ids=POLICY_IDS)
def agents(request, tmp_path_factory):
    """A trained agent (normalized observations) and its NumPy-only policy."""
    env_id, overrides, policy_class = request.param
    agent = TRPO(env_id, seed=0, normalize_obs=True, **SMALL, **overrides)
    assert type(agent.policy) is policy_class
    agent.learn(32)
    path = tmp_path_factory.mktemp("predict") / "model.npz"
    agent.save(str(path))
    return agent, load_policy(str(path))


def _obs_dim(agent):
    return agent.policy.net.sizes[0]


def _in_action_space(agent, actions, n):
    space = agent.collector.groups[0].venv.single_action_space
    actions = np.asarray(actions)
    if n is None:
        return space.contains(np.asarray(actions, dtype=space.dtype))
    return len(actions) == n and all(
        space.contains(np.asarray(a, dtype=space.dtype)) for a in actions)


def _callers(agent, policy):
    return {"predict": agent.predict, "normalize_obs": agent.normalize_obs,
            "NumpyPolicy.act": policy.act}


def test_the_examples_of_the_issue(agents):
    agent, _ = agents
    d = _obs_dim(agent)
    for bad in (np.zeros(d + 1), np.zeros(d - 1), np.zeros((2, 2, d))):
        with pytest.raises(ValueError, match=re.escape(f"obs: shape {bad.shape}, expected ({d},)")):
            agent.predict(bad)
    with pytest.raises(ValueError, match=r"obs\[1\] is nan"):
        agent.predict(np.array([0.0, np.nan] + [0.0] * (d - 2)))


@pytest.mark.parametrize("caller", ["predict", "normalize_obs", "NumpyPolicy.act"])
@pytest.mark.parametrize(("make_bad", "message"), [
    (lambda d: np.zeros(d + 1), "shape"),
    (lambda d: np.zeros(max(d - 1, 0)), "shape"),
    (lambda d: np.zeros(0), "shape"),
    (lambda d: np.float64(0.0), "shape"),
    (lambda d: np.zeros((3, d + 2)), "shape"),
    (lambda d: np.zeros((2, 2, d)), "shape"),
    (lambda d: np.zeros((d, 1)), "shape"),
    (lambda d: np.full(d, np.nan), "is nan"),
    (lambda d: np.full((20, d), np.inf), "is inf"),  # > 8 rows: the BLAS path
    (lambda d: np.vstack([np.zeros((3, d)), np.full((1, d), -np.inf)]), r"obs\[3, 0\] is -inf"),
    (lambda d: np.zeros(d, dtype=complex), "dtype complex128"),
    (lambda d: np.array(["0"] * d), "dtype <U1"),
    (lambda d: [[0.0] * d, [0.0] * (d + 1)], "not an array of numbers"),
    (lambda d: {"obs": np.zeros(d)}, "dtype object"),
    (lambda d: None, "dtype object"),
])
def test_bad_observations_are_refused_naming_obs(agents, caller, make_bad, message):
    agent, policy = agents
    fn = _callers(agent, policy)[caller]
    with pytest.raises(ValueError, match=message) as info:
        fn(make_bad(_obs_dim(agent)))
    assert str(info.value).startswith("obs")


@settings(max_examples=60, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
       dtype=st.sampled_from(["float64", "float32", "int64", "bool", "complex128", "<U2"]),
       data=st.data())
def test_any_shape_and_dtype_gives_actions_or_a_clear_error(agents, shape, dtype, data):
    agent, policy = agents
    d = _obs_dim(agent)
    obs = data.draw(hnp.arrays(dtype, shape, elements=None if dtype == "<U2" else
                               hnp.from_dtype(np.dtype(dtype), allow_nan=False,
                                              allow_infinity=False, min_value=-5, max_value=5)
                               if dtype.startswith("float") else None))
    valid = (len(shape) in (1, 2) and shape[-1] == d and np.dtype(dtype).kind in "biuf")
    for name, fn in _callers(agent, policy).items():
        if not valid:
            with pytest.raises(ValueError, match=r"^obs"):
                fn(obs)
            continue
        out = fn(obs)
        if name == "normalize_obs":
            assert out.shape == shape and np.isfinite(out).all()
        else:
            assert _in_action_space(agent, out, None if len(shape) == 1 else shape[0]), name


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 20), seed=st.integers(0, 2**32 - 1))
def test_every_batch_size_acts_like_rows_one_at_a_time(agents, n, seed):
    # The fused few-row path (<= 8 rows) and the BLAS path agree with single rows.
    agent, policy = agents
    obs = np.random.default_rng(seed).standard_normal((n, _obs_dim(agent)))
    batch = agent.predict(obs)
    assert len(batch) == n
    for i in range(n):
        np.testing.assert_allclose(batch[i], agent.predict(obs[i]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(policy.act(obs[i]), agent.predict(obs[i]), rtol=1e-9,
                                   atol=1e-12)


def test_lists_and_integer_observations_are_accepted(agents):
    agent, _ = agents
    d = _obs_dim(agent)
    np.testing.assert_array_equal(agent.predict([0] * d), agent.predict(np.zeros(d)))
    np.testing.assert_array_equal(agent.predict([[1] * d] * 2),
                                  agent.predict(np.ones((2, d), np.float32)))


def test_evaluate_refuses_an_env_of_other_spaces(agents):
    agent, _ = agents
    other = "Acrobot-v1" if agent.env_id == "Pendulum-v1" else "MountainCarContinuous-v0"
    with pytest.raises(ValueError, match=f"env: '{other}' has observation space"):
        agent.evaluate(1, env=gym.make(other))
    # Same observation shape, another action space.
    same_obs = "Acrobot-v1" if agent.env_id == "CartPole-v1" else None
    if same_obs is None:
        box = gym.make("Pendulum-v1")
        box.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        with pytest.raises(ValueError, match="action space"):
            agent.evaluate(1, env=box)
    with pytest.raises(TypeError, match=r"env: expected a gymnasium\.Env"):
        agent.evaluate(1, env=agent.env_id)


def test_evaluate_on_its_own_env_still_runs(agents):
    agent, _ = agents
    mean, std = agent.evaluate(2, seed=0, max_episode_steps=50)
    assert np.isfinite(mean) and np.isfinite(std)


@pytest.mark.parametrize(("obs", "theta_change", "name"), [
    (lambda d: np.zeros((1, d + 1)), None, "obs"),
    (lambda d: np.zeros(d), None, "obs"),
    (lambda d: np.zeros((1, d), np.float32), None, "obs"),
    (lambda d: [[0.0] * d], None, "obs"),
    (lambda d: np.zeros((1, d)), lambda t: t[:-1], "theta"),
    (lambda d: np.zeros((1, d)), lambda t: t.astype(np.float32), "theta"),
])
def test_the_policy_act_method_checks_what_its_kernels_index(agents, obs, theta_change, name):
    agent, _ = agents
    theta = agent.theta if theta_change is None else theta_change(agent.theta)
    with pytest.raises(ValueError, match=f"^{name}: expected a float64 array of shape"):
        agent.policy.act(theta, obs(_obs_dim(agent)), np.random.default_rng(0), True)
