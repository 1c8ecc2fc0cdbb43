"""Fuzzing round 12 on what users pass as ``env``: user-built vector envs and instances."""

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rl_adapters import TRPO, EnvOutputError
from rl_adapters.validation import CheckpointError

SMALL = {"n_steps": 32, "value_epochs": 1}
SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


def _cartpoles(n, kind=gym.vector.SyncVectorEnv):
    return kind([lambda: gym.make("CartPole-v1") for _ in range(n)], autoreset_mode=SAME_STEP)


class FaultyVectorEnv(gym.vector.VectorEnv):
    """Two 3-D environments whose episodes are truncated every 5 steps; ``fault`` names
    what its ``reset``/``step`` returns wrong."""

    metadata: ClassVar[dict] = {"autoreset_mode": SAME_STEP}

    def __init__(self, fault=None, n=2):
        self.fault, self.num_envs, self.t = fault, n, 0
        self.single_observation_space = spaces.Box(-1, 1, (3,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        obs = np.zeros((self.num_envs, 3), np.float32)
        return obs if self.fault == "reset_not_tuple" else (obs, {})

    def step(self, actions):
        self.t += 1
        n = self.num_envs
        obs = np.full((n, 3), 0.01 * self.t, np.float32)
        trunc = np.full(n, self.t % 5 == 0)
        info = {"final_obs": obs.copy(), "_final_obs": trunc.copy()} if trunc.any() else {}
        if self.fault == "infos_list":
            info = []
        if self.fault == "no_final_obs":
            info = {}
        out = (obs, np.ones(n), np.zeros(n, bool), trunc, info)
        return out[:4] if self.fault == "step_4" else out


def test_saving_does_not_end_the_workers_of_a_users_async_vector_env(tmp_path):
    venv = _cartpoles(2, gym.vector.AsyncVectorEnv)
    agent = TRPO(venv, seed=0, **SMALL)
    try:
        agent.learn(64)
        agent.save(tmp_path / "a.npz")
        assert all(pipe is not None for pipe in venv.parent_pipes)
        agent.learn(64)  # raised AttributeError: 'NoneType' object has no attribute 'send'
        assert agent.num_timesteps == 128
    finally:
        agent.close()


def test_a_checkpoint_of_a_users_sync_vector_env_loads_onto_an_async_one(tmp_path):
    agent = TRPO(_cartpoles(2), seed=0, **SMALL)
    agent.learn(64)
    agent.save(tmp_path / "a.npz")
    agent.close()
    loaded = TRPO.load(tmp_path / "a.npz", env=_cartpoles(2, gym.vector.AsyncVectorEnv))
    try:
        loaded.learn(64)
        assert loaded.num_timesteps == 128
    finally:
        loaded.close()


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("fault, field", [("infos_list", "infos is list"),
                                          ("step_4", "output is a tuple of 4 values"),
                                          ("no_final_obs", "final observation is missing")])
def test_a_custom_vector_envs_bad_step_output_is_an_env_output_error(fault, field, groups):
    env = FaultyVectorEnv(fault) if groups == 1 else [FaultyVectorEnv(), FaultyVectorEnv(fault)]
    agent = TRPO(env, seed=0, **SMALL)
    with pytest.raises(EnvOutputError, match=field):
        agent.learn(64)


def test_a_custom_vector_envs_reset_that_is_not_a_tuple_is_named():
    with pytest.raises(EnvOutputError, match=r"at reset: output .* returns a tuple"):
        TRPO(FaultyVectorEnv("reset_not_tuple", n=3), seed=0, **SMALL)


def test_a_2d_final_obs_array_works_in_a_list_of_vector_envs():
    agent = TRPO([FaultyVectorEnv(), FaultyVectorEnv()], seed=0, **SMALL)
    agent.learn(64)  # raised ValueError: could not broadcast (2,3) into (2,)
    assert agent.num_timesteps == 128


def test_a_closed_vector_env_is_refused():
    for kind in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv):
        venv = _cartpoles(1, kind)
        venv.close()
        with pytest.raises(ValueError, match=r"^env: the vector env .* is closed"):
            TRPO(venv, seed=0, **SMALL)


def test_a_vector_env_of_no_environments_names_env():
    with pytest.raises(ValueError, match=r"^env: .*num_envs=0"):
        TRPO(FaultyVectorEnv(n=0), seed=0, **SMALL)


def test_an_explicit_n_envs_that_disagrees_with_the_vector_env_is_refused():
    with pytest.raises(ValueError, match=r"^n_envs=3: env is vector envs of 2"):
        TRPO(_cartpoles(2), seed=0, n_envs=3, **SMALL)
    agent = TRPO(_cartpoles(2), seed=0, n_envs=2, **SMALL)
    assert agent.config.n_envs == 2


@pytest.mark.parametrize("load_env", ["sync1", "instance"])
def test_load_onto_another_number_of_environments_names_env(tmp_path, load_env):
    agent = TRPO(_cartpoles(2), seed=0, **SMALL)
    agent.save(tmp_path / "a.npz")
    agent.close()
    env = _cartpoles(1) if load_env == "sync1" else gym.make("CartPole-v1")
    with pytest.raises(CheckpointError, match=r"env: .*saved with n_envs=2"):
        TRPO.load(tmp_path / "a.npz", env=env)


@pytest.mark.parametrize("make", [
    lambda: gym.wrappers.TimeLimit(gym.make("CartPole-v1").unwrapped, 20),
    lambda: gym.wrappers.NormalizeObservation(gym.make("CartPole-v1")),
    lambda: gym.make("CartPole-v1", max_episode_steps=20),
], ids=["TimeLimit", "NormalizeObservation", "max_episode_steps"])
def test_a_user_wrapped_instance_does_not_load_silently_onto_the_plain_id(tmp_path, make):
    agent = TRPO(make(), seed=0, n_envs=1, **SMALL)
    assert agent.env_id is None
    assert agent.config.family == TRPO("CartPole-v1", seed=0, n_envs=1, **SMALL).config.family
    agent.save(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"^env: the checkpoint has no env id"):
        TRPO.load(tmp_path / "a.npz")
    TRPO.load(tmp_path / "a.npz", env=make()).learn(32)


def test_a_plain_made_instance_keeps_its_id(tmp_path):
    agent = TRPO(gym.make("CartPole-v1", render_mode="rgb_array"), seed=0, n_envs=1, **SMALL)
    assert agent.env_id == "CartPole-v1"
    agent.save(tmp_path / "a.npz")
    assert TRPO.load(tmp_path / "a.npz").env_id == "CartPole-v1"
