"""Issue 9, cause 4: environments that return unusable outputs.

Every fault gives one EnvOutputError naming the environment, the step and the field,
raised before the agent's parameters, normalizers and random streams change.
"""


import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from rl_adapters import TRPO, EnvOutputError
from rl_adapters.checkpoint import flatten_state

FAULT_ID = "BadInputFault-v0"
SMALL = {"n_steps": 8, "value_epochs": 1, "value_batch_size": 8}


class FaultEnv(gym.Env):
    """A 3-D observation, 2-action env that misbehaves at its ``fault_step``-th step
    (counted from its creation; 0: at its first reset).

    ``fault`` names what goes wrong; only the environment created ``fault_instance``-th
    (counted in ``FaultEnv.created``) misbehaves.  It holds no ``state`` array, so the
    collector keeps no snapshot of it.
    """

    created = 0
    observation_space = spaces.Box(-10.0, 10.0, (3,), np.float64)
    action_space = spaces.Discrete(2)

    def __init__(self, fault="none", fault_step=3, fault_instance=0, episode=1000):
        self.fault, self.fault_step, self.episode = fault, fault_step, episode
        self.instance = FaultEnv.created
        FaultEnv.created += 1
        # -1: every instance misbehaves (subprocesses count their instances apart).
        self.faulty = fault_instance in (-1, self.instance)
        self.t = self.total = 0  # steps in the episode, steps since creation

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        obs = self.np_random.uniform(-1, 1, 3)
        if self.fault_step == 0 and self.faulty:
            return _RESET_FAULTS[self.fault](obs)
        return obs, {}

    def step(self, action):
        self.t += 1
        self.total += 1
        obs = self.np_random.uniform(-1, 1, 3)
        out = (obs, 1.0, False, self.t % self.episode == 0, {})
        if self.total == self.fault_step and self.faulty and self.fault != "none":
            return _STEP_FAULTS[self.fault](out)
        return out


def _set(out, i, value):
    out = list(out)
    out[i] = value
    return tuple(out)


#: fault -> (what step returns instead, the field named in the error)
_STEP_FAULTS = {
    "nan_obs": lambda o: _set(o, 0, np.array([0.0, np.nan, 0.0])),
    "inf_obs": lambda o: _set(o, 0, np.array([np.inf, 0.0, 0.0])),
    "huge_obs": lambda o: _set(o, 0, np.array([0.0, 0.0, -1e200])),
    "nan_reward": lambda o: _set(o, 1, float("nan")),
    "inf_reward": lambda o: _set(o, 1, float("inf")),
    "minus_inf_reward": lambda o: _set(o, 1, -np.inf),
    "huge_reward": lambda o: _set(o, 1, 1e300),
    "none_reward": lambda o: _set(o, 1, None),
    "str_reward": lambda o: _set(o, 1, "1.0"),
    "vector_reward": lambda o: _set(o, 1, np.ones(2)),
    "complex_reward": lambda o: _set(o, 1, 1 + 2j),
    "old_gym_4_tuple": lambda o: (o[0], o[1], o[2] or o[3], o[4]),
    "six_tuple": lambda o: (*o, None),
    "list_output": lambda o: list(o),
    "short_obs": lambda o: _set(o, 0, np.zeros(2)),
    "long_obs": lambda o: _set(o, 0, np.zeros(4)),
    "scalar_obs": lambda o: _set(o, 0, 0.5),
    "2d_obs": lambda o: _set(o, 0, np.zeros((1, 3))),
    "str_obs": lambda o: _set(o, 0, np.array(["a", "b", "c"])),
    "complex_obs": lambda o: _set(o, 0, np.zeros(3, complex)),
    "dict_obs": lambda o: _set(o, 0, {"x": np.zeros(3)}),
    "none_obs": lambda o: _set(o, 0, None),
    "none_terminated": lambda o: _set(o, 2, None),
    "str_truncated": lambda o: _set(o, 3, "no"),
    "int_terminated": lambda o: _set(o, 2, 1),
    "list_info": lambda o: _set(o, 4, []),
    "nan_final_obs": lambda o: (np.array([np.nan, 0.0, 0.0]), 1.0, False, True, {}),
}
_FIELDS = {
    "nan_obs": "observation", "inf_obs": "observation", "huge_obs": "observation",
    "nan_reward": "reward", "inf_reward": "reward", "minus_inf_reward": "reward",
    "huge_reward": "reward", "none_reward": "reward", "str_reward": "reward",
    "vector_reward": "reward", "complex_reward": "reward", "old_gym_4_tuple": "output",
    "six_tuple": "output", "list_output": "output", "short_obs": "observation",
    "long_obs": "observation", "scalar_obs": "observation", "2d_obs": "observation",
    "str_obs": "observation", "complex_obs": "observation", "dict_obs": "observation",
    "none_obs": "observation", "none_terminated": "terminated", "str_truncated": "truncated",
    "int_terminated": "terminated", "list_info": "info", "nan_final_obs": "final observation",
}
_RESET_FAULTS = {
    "bare_obs": lambda obs: obs,  # the old Gym API: reset returns the observation alone
    "bare_obs_len2": lambda obs: obs[:2],  # would unpack silently into (obs, info)
    "triple": lambda obs: (obs, {}, None),
    "nan_obs": lambda obs: (np.full(3, np.nan), {}),
    "short_obs": lambda obs: (obs[:2], {}),
    "none_info": lambda obs: (obs, None),
}
_RESET_FIELDS = {"bare_obs": "output", "bare_obs_len2": "output", "triple": "output",
                 "nan_obs": "observation", "short_obs": "observation", "none_info": "info"}


def _make(fault="none", fault_step=3, fault_instance=0, episode=1000):
    return FaultEnv(fault, fault_step, fault_instance, episode)


gym.register(FAULT_ID, entry_point=_make, max_episode_steps=500)


@pytest.fixture(autouse=True)
def _count_from_zero():
    FaultEnv.created = 0


def _snapshot(agent):
    """The agent's whole state, copied (compared before and after a failed update)."""
    return {k: np.array(v, copy=True) for k, v in flatten_state(agent.state_dict()).items()}


def _assert_unchanged(before, agent):
    after = flatten_state(agent.state_dict())
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def _agent(fault, *, by_id=True, n_envs=1, fault_step=3, fault_instance=0, episode=1000,
           **extra):
    kwargs = {"fault": fault, "fault_step": fault_step, "fault_instance": fault_instance,
              "episode": episode}
    if by_id:
        env = FAULT_ID
        # gym.make passes the kwargs through the registered entry point.
        gym.registry[FAULT_ID].kwargs = kwargs
    else:
        env = _make(**kwargs)
    return TRPO(env, seed=0, n_envs=n_envs, **SMALL, **extra)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("norm_update", ["per_step", "per_rollout"])
@pytest.mark.parametrize("by_id", [True, False], ids=["id", "instance"])
@pytest.mark.parametrize("fault", sorted(_STEP_FAULTS))
def test_a_bad_step_output_names_env_step_and_field_and_changes_nothing(fault, by_id,
                                                                        norm_update):
    """Both collection modes (the per_rollout one is what Ray workers run) check every step."""
    episode = 3 if fault == "nan_final_obs" else 1000
    agent = _agent(fault, by_id=by_id, fault_step=11, episode=episode,
                   normalize_obs=True, normalize_reward=True, obs_norm_update=norm_update)
    agent.learn(8)  # the first update is clean; the fault is at the env's 11th step
    before = _snapshot(agent)
    with pytest.raises(EnvOutputError) as info:
        agent.learn(8)
    err = info.value
    message = str(err)
    name = FAULT_ID if by_id else "FaultEnv"
    assert err.env == name and repr(name) in message
    assert err.field == _FIELDS[fault] and _FIELDS[fault] in message
    # The env's 11th step is step 2 of the second rollout (steps 0-7 were the first).
    assert "rollout step 2" in message and "timestep 8" in message
    assert "env index 0" in message
    if fault == "old_gym_4_tuple":
        assert "old Gym API" in message
    _assert_unchanged(before, agent)


@pytest.mark.parametrize("by_id", [True, False], ids=["id", "instance"])
@pytest.mark.parametrize("fault", sorted(_RESET_FAULTS))
def test_a_bad_reset_output_is_named_when_the_agent_is_built(fault, by_id):
    gym.registry[FAULT_ID].kwargs = {}
    with pytest.raises(EnvOutputError) as info:
        _agent(fault, by_id=by_id, fault_step=0)
    assert info.value.field == _RESET_FIELDS[fault]
    assert "reset" in str(info.value)
    if fault.startswith("bare_obs"):
        assert "old Gym API" in str(info.value)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["nan_obs", "inf_obs", "huge_obs", "nan_reward", "inf_reward",
                             "huge_reward", "none_terminated", "short_obs"]),
       n_envs=st.integers(1, 3), data=st.data())
def test_the_error_locates_the_faulty_env_in_a_batch(kind, n_envs, data):
    FaultEnv.created = 0
    instance = data.draw(st.integers(0, n_envs - 1), label="faulty env")
    step = data.draw(st.integers(1, 8), label="its faulty step")
    agent = _agent(kind, n_envs=n_envs, fault_step=step, fault_instance=instance,
                   normalize_obs=True)
    before = _snapshot(agent)
    with pytest.raises(EnvOutputError) as info:
        agent.learn(8 * n_envs)
    message = str(info.value)
    assert f"rollout step {step - 1}" in message and f"env index {instance}" in message
    assert info.value.field == _FIELDS[kind]
    _assert_unchanged(before, agent)


def test_a_clean_run_of_the_fault_env_is_unaffected_by_the_checks():
    agent = _agent("none", n_envs=2, normalize_obs=True)
    agent.learn(32)
    assert agent.num_timesteps == 32 and np.all(np.isfinite(agent.theta))


def test_the_batch_check_accepts_exactly_the_batches_whose_squares_sum_finitely():
    from rl_adapters.env_checks import check_batch

    flags = np.zeros(2, bool)
    big = np.array([[1e150, -1e150, 0.0], [1.0, 2.0, 3.0]])  # squares sum to 2e300
    assert check_batch(big, np.array([1e150, 0.0]), flags, flags, 2, 3) is None
    too_big = big.copy()
    too_big[1, 2] = 1e155  # its square, 1e310, overflows
    with np.errstate(over="ignore"):
        field, problem, index = check_batch(too_big, np.zeros(2), flags, flags, 2, 3)
        assert (field, index) == ("observation", 1) and problem.startswith("[2] is 1e+155")
        assert check_batch(big, np.array([0.0, -1e155]), flags, flags, 2, 3)[::2] == (
            "reward", 1)


def test_evaluate_names_the_bad_output_of_its_env():
    agent = _agent("none")
    for fault, field in [("nan_obs", "observation"), ("nan_reward", "reward"),
                         ("old_gym_4_tuple", "output"), ("short_obs", "observation")]:
        with pytest.raises(EnvOutputError) as info:
            agent.evaluate(1, env=_make(fault, fault_step=2, fault_instance=-1))
        assert info.value.field == field and "FaultEnv" in str(info.value)


@pytest.mark.parametrize(("fault", "message"), [
    ("nan_reward", "reward is nan"),  # found by the collector, in this process
    ("none_reward", "reward is NoneType None"),  # found by CheckedEnv, in the worker
])
@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium logs the worker's traceback
def test_the_error_survives_a_subprocess_vector_env(fault, message):
    agent = _agent(fault, n_envs=2, fault_step=2, fault_instance=-1, vector_env="async")
    try:
        with pytest.raises(EnvOutputError, match=message) as info:
            agent.learn(16)
        assert info.value.field == "reward"
    finally:
        agent.close()


class _SpoilsTheFifthStep(gym.Wrapper):
    """A wrapper that a registered env's entry point puts around a well-behaved env, and
    that spoils one field of its fifth step's output."""

    def __init__(self, env, field, value):
        super().__init__(env)
        self.field, self.value, self.steps = field, value, 0

    def step(self, action):
        out = dict(zip(("obs", "reward", "terminated", "truncated", "info"),
                       self.env.step(action), strict=True))
        self.steps += 1
        if self.steps == 5:
            out[self.field] = self.value
        return tuple(out.values())


@pytest.mark.parametrize("vector_env", ["sync", "gym_sync", "async"])
@pytest.mark.parametrize(("field", "value", "message"), [
    ("reward", np.array([1.0]), "reward is an array of shape (1,)"),
    ("obs", np.zeros(2, np.float32), "observation has shape (2,)"),
    ("truncated", "no", "truncated is str 'no', expected a bool"),
    ("reward", "1", "reward is str '1', expected a real number"),
])
@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium logs the worker's traceback
def test_the_outputs_of_a_registered_envs_own_wrapper_are_checked(vector_env, field, value,
                                                                 message):
    # the checks sat below the entry point's wrapper: its outputs reached NumPy, Numba or
    # Gymnasium's vector env raw, or were silently coerced ("no" read as True)
    env_id = "BadInputOwnWrapper-v0"
    gym.register(env_id, entry_point=lambda: _SpoilsTheFifthStep(
        gym.make("Pendulum-v1"), field, value))
    try:
        agent = TRPO(env_id, seed=0, n_envs=2, vector_env=vector_env, critic_process=False,
                     **SMALL)
        with pytest.raises(EnvOutputError, match=re.escape(message)):
            agent.learn(32)
        agent.close()
    finally:
        del gym.registry[env_id]


class _HugeForFloat32(gym.Env):
    """Returns a finite float64 observation too large for its float32 space."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.array([1e300, 0.0, 0.0]), 0.0, False, False, {}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_an_observation_beyond_a_float32_space_says_so():
    # stored in the space's dtype it reads as inf: the message said only "is inf", a value
    # the env never returned
    agent = TRPO(_HugeForFloat32(), seed=0, n_envs=1, n_steps=8, critic_process=False)
    with pytest.raises(EnvOutputError, match=re.escape(
            "observation[0] is inf (not finite) (or beyond the float32 observation space's "
            "range, 3.4e+38, which reads as inf)")):
        agent.learn(8)
