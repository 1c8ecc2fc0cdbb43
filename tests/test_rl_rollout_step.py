"""The rollout's one-call step (``rl_adapters._kernels.record_and_act``).

With a Gaussian policy, normalized observations and a vector env whose outputs are
trusted, one compiled call after each env step records the step and acts for the next.
It must give the general path's bits (the per-step NumPy conversions, checks and
``record_step``), hand every observation it cannot take to that path untouched, and
leave the errors as they were.
"""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import rl_adapters._kernels as kernels
import rl_adapters.rollout as rollout
from rl_adapters import TRPO, EnvOutputError
from rl_adapters.checkpoint import flatten_state
from rl_adapters.rollout import make_vector_env

ENV_ID = "FusedStepWalk-v0"
SMALL = {"n_steps": 40, "value_epochs": 1, "value_batch_size": 20, "normalize_obs": True,
         "normalize_reward": True}


class WalkEnv(gym.Env):
    """Observations of 3 numbers (float32 unless ``dtype``), 2 bounded actions, random
    terminations and a 15-step time limit (so both kinds of episode end fall inside a
    40-step rollout).

    At its ``fault_step``-th step since creation, the observation of the environment
    created ``fault_instance``-th is ``fault`` (if any).
    """

    action_space = spaces.Box(-1.0, 1.0, (2,), np.float64)
    created = 0

    def __init__(self, fault=None, fault_step=0, fault_instance=0, dtype="float32"):
        self.observation_space = spaces.Box(-5.0, 5.0, (3,), np.dtype(dtype))
        self.fault, self.fault_step, self.total = fault, fault_step, 0
        self.faulty = WalkEnv.created == fault_instance
        WalkEnv.created += 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.total += 1
        a = np.clip(action, -1, 1)
        self.x = (0.9 * self.x + 0.3 * np.r_[a, a[0] - a[1]]
                  + 0.1 * self.np_random.normal(size=3)).astype(np.float32)
        obs = self.x.copy()
        if self.fault is not None and self.faulty and self.total == self.fault_step:
            obs = np.array(self.fault, dtype=np.float64)
        reward = float(self.x[0] - 0.1 * a @ a)
        terminated = bool(self.np_random.uniform() < 0.04)
        return obs, reward, terminated, False, {}


gym.register(ENV_ID, entry_point=WalkEnv, max_episode_steps=15)


def _env(setup, **fault):
    gym.registry[ENV_ID].kwargs = fault
    if setup == "groups":  # two Gymnasium vector envs, of one and two environments
        return [make_vector_env(ENV_ID, 1, "gym_sync"), make_vector_env(ENV_ID, 2, "gym_sync")]
    return ENV_ID


def _train(setup, n_envs, *, general, monkeypatch, updates=3, **fault):
    """Train; with ``general``, every step on the general path.  Also returns the
    statuses of the one-call steps."""
    statuses = []
    WalkEnv.created = 0
    with monkeypatch.context() as m:
        if general:  # nothing is trusted: every step takes the general path
            m.setattr(rollout, "_TRUSTED_VECTOR_ENVS", ())
        else:
            def counted(*args):
                out = kernels.record_and_act(*args)
                statuses.append(out[0])
                return out
            m.setattr(rollout, "record_and_act", counted)
        agent = TRPO(_env(setup, **fault), seed=11, n_envs=n_envs, **SMALL)
        try:
            agent.learn(updates * agent.config.batch_size)
        finally:
            agent.close()
    return agent, statuses


def _assert_same_run(fused, general):
    a, b = flatten_state(fused.state_dict()), flatten_state(general.state_dict())
    assert a.keys() == b.keys()
    timed = ("steps_per_sec", "env_time", "policy_time", "update_time", "wall_time")
    for key in a:
        if key.startswith("metrics/") and key.endswith(timed):
            continue
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    assert list(fused.episode_returns) == list(general.episode_returns)
    assert [m["kl"] for m in fused.metrics] == [m["kl"] for m in general.metrics]


@pytest.mark.parametrize("setup, n_envs, dtype", [
    ("lean", 1, "float32"), ("lean", 3, "float32"), ("groups", 3, "float32"),
    ("lean", 2, "float64"), ("lean", 2, "int16"),
    ("lean", 2, "float16"),  # Numba converts no float16: the general path only
])
def test_the_one_call_step_gives_the_general_paths_bits(setup, n_envs, dtype, monkeypatch):
    fused, statuses = _train(setup, n_envs, general=False, monkeypatch=monkeypatch,
                             dtype=dtype)
    general, none = _train(setup, n_envs, general=True, monkeypatch=monkeypatch, dtype=dtype)
    # each path ran where expected
    assert len(statuses) == (0 if dtype == "float16" else 3 * SMALL["n_steps"]) and not none
    assert kernels.STEP_CHECK not in statuses
    assert len(fused.episode_returns) >= 3 * n_envs  # episodes ended inside the rollouts
    _assert_same_run(fused, general)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("fault, problem", [
    ([0.0, np.nan, 0.0], "[1] is nan (not finite)"),
    ([0.0, 0.0, np.inf], "[2] is inf (not finite)"),
    ([0.0, 0.0, 1e155], "[2] is 1e+155 (its square overflows"),
    # each square fits a float64, their sum does not
    ([1.3e154, 1.3e154, 0.0], "is 1.3e+154 (its square overflows"),
])
@pytest.mark.parametrize("n_envs, instance", [(1, 0), (3, 2)])
def test_observations_the_one_call_step_refuses_give_the_general_paths_error(
        fault, problem, n_envs, instance, monkeypatch):
    errors = []
    for general in (False, True):
        with pytest.raises(EnvOutputError) as info:
            _train("lean", n_envs, general=general, monkeypatch=monkeypatch, fault=fault,
                   fault_step=47, fault_instance=instance, dtype="float64")
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    # the env's 47th step is step 6 of the second rollout
    assert "rollout step 6" in errors[0] and f"env index {instance}" in errors[0]
    assert problem in errors[0], errors[0]


@pytest.mark.parametrize("fault, handed_back", [
    ([1e150, -1e150, 0.0], True),  # squares sum to 2e300: the general path takes the step
    ([1e140, 0.0, -1e140], False),  # 2e280: the one-call step takes it
])
@pytest.mark.parametrize("n_envs", [1, 3])
def test_large_observations_whose_squares_sum_finitely_are_taken(fault, handed_back, n_envs,
                                                                monkeypatch):
    fault = {"fault": fault, "fault_step": 47, "fault_instance": n_envs - 1,
             "dtype": "float64"}
    fused, statuses = _train("lean", n_envs, general=False, monkeypatch=monkeypatch, **fault)
    general, _ = _train("lean", n_envs, general=True, monkeypatch=monkeypatch, **fault)
    assert statuses.count(kernels.STEP_CHECK) == handed_back
    assert len(statuses) == 3 * SMALL["n_steps"]
    _assert_same_run(fused, general)


def test_the_kernel_writes_nothing_when_it_hands_a_step_back():
    rng = np.random.default_rng(0)
    E, D, A, T = 2, 3, 2, 4
    sizes = np.array([D, 4, A], dtype=np.int64)
    n_net = D * 4 + 4 + 4 * A + A
    args = dict(
        next_obs=np.array([[1.0, 2.0, 3.0], [1e155, 0.0, 0.0]]), reward=np.ones(E),
        terminated=np.zeros(E, bool), truncated=np.zeros(E, bool), raw=rng.normal(size=(E, D)),
        ep_return=rng.normal(size=E), ep_length=np.arange(E), raw_reward_buf=np.zeros((T, E)),
        reward_buf=np.zeros((T, E)), terminated_buf=np.zeros((T, E), bool),
        truncated_buf=np.zeros((T, E), bool), done=np.zeros(E, bool), scale=True,
        returns=rng.normal(size=E), s_mean=np.zeros(1), s_var=np.ones(1), s_count=5.0,
        s_gamma=0.99, s_clip=10.0, s_eps=1e-8, mean=rng.normal(size=D), var=np.ones(D),
        count=7.0, epsilon=1e-8, clip=10.0, obs_buf=np.zeros((T, E, D)),
        theta=rng.normal(size=n_net + A), sizes=sizes, relu=False, n_net=n_net,
        noise=rng.normal(size=(T, E, A)), low=-np.ones(A), high=np.ones(A),
        clip_actions=True, actions_buf=np.zeros((T, E, A)), env_actions_buf=np.zeros((T, E, A)),
        logp_buf=np.zeros((T, E)), t=1)
    before = {k: np.array(v, copy=True) for k, v in args.items()}
    status, count, s_count = kernels.record_and_act(*args.values())
    assert status == kernels.STEP_CHECK and (count, s_count) == (7.0, 5.0)
    for k, v in args.items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)
    # the same call with a finite batch records step 1 and acts for step 2
    args["next_obs"][1, 0] = 0.5
    status, count, s_count = kernels.record_and_act(*args.values())
    assert status == kernels.STEP_ACTED and count == 9.0 and s_count == 7.0
    np.testing.assert_array_equal(args["raw"], args["next_obs"])
    assert np.all(args["obs_buf"][2] != 0.0) and np.all(args["logp_buf"][2] != 0.0)
    assert np.all(args["obs_buf"][3] == 0.0)
