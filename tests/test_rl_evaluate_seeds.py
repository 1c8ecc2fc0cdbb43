"""``TRPO.evaluate``'s episode seeds: an int, a sequence of declared seeds, bad values."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rl_adapters import TRPO


@pytest.fixture(scope="module")
def agent():
    return TRPO("Pendulum-v1", seed=3)


def _returns(agent, seeds):
    return [agent.evaluate(1, seed=[s])[0] for s in seeds]


def test_sequence_seeds_each_episode(agent):
    seeds = [11, 4, 2024]
    mean, std = agent.evaluate(3, seed=seeds)
    each = _returns(agent, seeds)
    # Pendulum's start state is random: the three episodes differ, and each is the one
    # its own seed starts.
    assert len(set(each)) == 3
    assert mean == pytest.approx(np.mean(each), rel=1e-12)
    assert std == pytest.approx(np.std(each), rel=1e-12)


def test_int_seed_is_consecutive_episode_seeds(agent):
    assert agent.evaluate(3, seed=7) == agent.evaluate(3, seed=[7, 8, 9])
    assert agent.evaluate(3, seed=np.int64(7)) == agent.evaluate(3, seed=np.array([7, 8, 9]))


def test_same_seeds_same_start_states(agent):
    # The declared seeds fix the start states: the first observation equals a plain
    # Gymnasium reset with that seed.
    env = gym.make("Pendulum-v1")
    obs_a, _ = env.reset(seed=2024)
    obs_b, _ = gym.make("Pendulum-v1").reset(seed=2024)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert _returns(agent, [2024]) == _returns(agent, [2024])


@pytest.mark.parametrize(("seed", "match"), [
    ([1, 2], r"seed: 2 episode seeds for n_episodes=3"),
    ([1, 2, -3], r"seed\[2\] must be a non-negative int"),
    ([1, 2.0, 3], r"seed\[1\] must be a non-negative int"),
    ([True, 2, 3], r"seed\[0\] must be a non-negative int"),
    (-1, r"seed must be a non-negative int"),
    ("123", r"seed must be None, an int or a sequence of 3 ints, got str"),
    (1.5, r"seed must be None, an int or a sequence of 3 ints, got float"),
])
def test_bad_seeds_name_the_argument(agent, seed, match):
    with pytest.raises(ValueError, match=match):
        agent.evaluate(3, seed=seed)
