"""Issue 9, cause 6 and the env-id item: unsupported spaces and unknown ids.

An environment with an unsupported space is refused when the agent is built, before any
array is shaped after the space, with a TypeError naming the space and the supported ones
(Box observations; Discrete, MultiDiscrete, Box actions).  Dict and Tuple observations are
not flattened behind the user's back: the message points to
``gymnasium.wrappers.FlattenObservation``, so that the observations ``predict`` takes are
the ones the policy sees.  An unknown or malformed id is one ValueError naming it, with
close registered ids.
"""

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rl_adapters import TRPO

SMALL = {"n_steps": 8, "n_envs": 1, "value_epochs": 1, "value_batch_size": 8}
BOX3 = spaces.Box(-1.0, 1.0, (3,), np.float64)

OBSERVATION_SPACES = {
    "Dict": spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Box(-1, 1, (3,))}),
    "Tuple": spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)))),
    "Discrete": spaces.Discrete(5),
    "MultiBinary": spaces.MultiBinary(4),
    "MultiDiscrete": spaces.MultiDiscrete([2, 3]),
    "Box 2-D": spaces.Box(0, 255, (4, 4), np.uint8),
    "Box 0-D": spaces.Box(-1.0, 1.0, (), np.float64),
    "Box empty": spaces.Box(-1.0, 1.0, (0,), np.float64),
    "Text": spaces.Text(5),
}
ACTION_SPACES = {
    "Dict": spaces.Dict({"a": spaces.Discrete(2)}),
    "Tuple": spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
    "MultiBinary": spaces.MultiBinary(3),
    "Box 2-D": spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    "MultiDiscrete 2-D": spaces.MultiDiscrete([[2, 3], [4, 5]]),
    "Text": spaces.Text(5),
}


class SpaceEnv(gym.Env):
    """An env with the given spaces that samples its outputs from them."""

    def __init__(self, observation_space=BOX3, action_space=None):
        self.observation_space = observation_space
        self.action_space = action_space if action_space is not None else spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


gym.register("BadInputSpaces-v0", entry_point=SpaceEnv)


def _as(kind, space):
    return {"observation_space": space} if kind == "observation" else {"action_space": space}


def _build(how, kind, space):
    if how == "id":
        gym.registry["BadInputSpaces-v0"].kwargs = _as(kind, space)
        return TRPO("BadInputSpaces-v0", seed=0, **SMALL)
    if how == "instance":
        return TRPO(SpaceEnv(**_as(kind, space)), seed=0, **SMALL)
    venv = gym.vector.SyncVectorEnv([lambda: SpaceEnv(**_as(kind, space))],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return TRPO(venv, seed=0, **SMALL)


@pytest.fixture(autouse=True)
def _clean_registration():
    yield
    gym.registry["BadInputSpaces-v0"].kwargs = {}


@pytest.mark.parametrize("how", ["id", "instance", "vector"])
@pytest.mark.parametrize("name", sorted(OBSERVATION_SPACES))
def test_unsupported_observation_spaces_are_named(how, name):
    space = OBSERVATION_SPACES[name]
    with pytest.raises(TypeError) as info:
        _build(how, "observation", space)
    message = str(info.value)
    assert f"observation space {space}" in message
    assert "supported: observations: a 1-D Box" in message or "flat Box" in message
    if name in ("Dict", "Tuple", "Box 2-D"):
        assert "gymnasium.wrappers.FlattenObservation" in message
    assert "Value after *" not in message


@pytest.mark.parametrize("how", ["id", "instance", "vector"])
@pytest.mark.parametrize("name", sorted(ACTION_SPACES))
def test_unsupported_action_spaces_are_named(how, name):
    space = ACTION_SPACES[name]
    with pytest.raises(TypeError) as info:
        _build(how, "action", space)
    message = str(info.value)
    assert f"action space {space}" in message
    assert "actions: Discrete, 1-D MultiDiscrete or a 1-D Box" in message


@pytest.mark.parametrize("name", ["Dict", "Tuple"])
def test_the_suggested_flattening_trains(name):
    env = gym.wrappers.FlattenObservation(SpaceEnv(OBSERVATION_SPACES[name]))
    agent = TRPO(env, seed=0, **SMALL)
    agent.learn(8)
    flat_dim = {"Dict": 5, "Tuple": 3}[name]
    assert agent.policy.net.sizes[0] == flat_dim
    assert agent.predict(np.zeros(flat_dim)) in (0, 1)


@pytest.mark.parametrize(("env_id", "close"), [
    ("CartPol-v1", "'CartPole-v1'"),
    ("CartPole-v9", "'CartPole-v1'"),
    ("cartpole-v1", "'CartPole-v1'"),
    ("Pendulum-v0", "'Pendulum-v1'"),
    ("Cart Pole", "'CartPole-v1'"),
    ("CartPole", "'CartPole-v1'"),
    ("MountainCarContinous-v0", "'MountainCarContinuous-v0'"),
    ("NoSuchEnvironmentAnywhere-v0", None),
    ("", None),
    ("ALE/Pong-v5", None),
])
def test_unknown_or_malformed_env_ids_name_the_id_and_close_ones(env_id, close):
    with pytest.raises(ValueError) as info:
        TRPO(env_id, seed=0, **SMALL)
    message = str(info.value)
    assert message.startswith(f"env={env_id!r} is not a registered Gymnasium environment id")
    if close is not None:
        assert re.search(r"close registered ids: .*" + re.escape(close), message)


def test_an_id_with_a_missing_module_names_the_module():
    with pytest.raises(ValueError, match="cannot import the module 'no_such_module_xyz'"):
        TRPO("no_such_module_xyz:Foo-v0", seed=0, **SMALL)


@pytest.mark.parametrize("env", [123, None, 1.5, b"CartPole-v1", object()])
def test_an_env_of_another_type_is_a_type_error(env):
    with pytest.raises(TypeError, match="expected a Gymnasium id"):
        TRPO(env, seed=0, **SMALL)
